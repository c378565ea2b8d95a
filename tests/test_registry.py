import pytest

from dacl.errors import UnknownNameError
from dacl.registry import BENCHMARKS, METHODS, Registry


def test_unknown_name_lists_registered_names_and_suggests():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("dannn")
    msg = str(err.value)
    assert "unknown method 'dannn'" in msg
    assert "Did you mean 'dann'?" in msg
    assert "source_only" in msg and "dann" in msg


def test_register_decorator_and_duplicate_rejected():
    reg: Registry = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and A.registry_name == "a"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("B", (), {}))
    assert reg.build("a").__class__ is A


def test_builtins_and_entry_point_plugin_are_registered():
    assert {"source_only", "dann"} <= set(METHODS.names())
    # linear_probe lives in the separate `baselines` package and arrives only via the dacl.plugins entry point.
    assert "linear_probe" in METHODS.names()
    assert {"mnist_usps", "digits_offline", "mnist_mnistm"} <= set(BENCHMARKS.names())


def test_core_never_imports_baselines_and_data_never_imports_methods():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "dacl"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import baselines" not in text and "from baselines" not in text, path
        if path.parent.name == "data":
            assert "dacl.methods" not in text, f"{path}: data must not depend on methods"


def test_method_config_files_match_python_defaults():
    """Every configs/method/*.yaml lists exactly the method's hyper-parameters (no silent typos/drift)."""
    from pathlib import Path

    import yaml

    for path in (Path(__file__).resolve().parents[1] / "configs" / "method").glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        cls = METHODS.get(cfg.pop("name"))
        search = cfg.pop("search", {}) or {}
        assert cfg == cls.defaults, f"{path.name}: {cfg} vs {cls.defaults}"
        assert set(search) <= set(cls.defaults), f"{path.name}: search names unknown keys {set(search) - set(cls.defaults)}"


# Methods without an authors' release to cite: the supervised baseline, and geomloss's divergence used as a loss.
_NO_RELEASE = {"source_only", "sinkhorn"}


def test_method_config_cites_the_released_recipe_it_follows():
    """A DA/TTA method's defaults are traceable: its config's header names a repository file at a commit."""
    import re
    from pathlib import Path

    import yaml

    cited = re.compile(r"[\w.-]+/[\w.-]+ .*?\b(at|commit) [0-9a-f]{7,40}\b", re.S)
    for path in (Path(__file__).resolve().parents[1] / "configs" / "method").glob("*.yaml"):
        module = METHODS.get(yaml.safe_load(path.read_text())["name"]).__module__
        if not module.startswith(("dacl.methods.da.", "dacl.methods.tta.")) or path.stem in _NO_RELEASE:
            continue
        header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
        assert cited.search(header), f"{path.name}: header cites no repository file at a commit"


def test_unknown_hyperparameter_is_rejected():
    from dacl.errors import ConfigError

    with pytest.raises(ConfigError, match="trade_of"):
        METHODS.get("dann")(trade_of=1.0)
