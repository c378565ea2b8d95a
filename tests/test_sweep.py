"""Random search: seed 0 is the defaults, draws are in range, and stable when methods or names are added."""
import math

import pytest

from dacl.errors import ConfigError
from dacl.sweep import sample_hparams

SPACE = {"trade_off": ["log_uniform", 0.1, 10.0], "disc_hidden": ["choice", [256, 512, 1024]],
         "threshold": ["uniform", 0.8, 0.98], "k": ["int_uniform", 1, 3]}


def test_seed_zero_means_defaults():
    assert sample_hparams("dann", SPACE, 0) == {}


def test_draws_are_in_range_and_reproducible():
    for seed in range(1, 30):
        hp = sample_hparams("dann", SPACE, seed)
        assert 0.1 <= hp["trade_off"] <= 10 and hp["disc_hidden"] in (256, 512, 1024) and 0.8 <= hp["threshold"] <= 0.98
        assert hp["k"] in (1, 2, 3) and hp == sample_hparams("dann", SPACE, seed)
    values = {round(math.log10(sample_hparams("dann", SPACE, s)["trade_off"]), 1) for s in range(1, 30)}
    assert len(values) > 10, "log-uniform draws should spread over the range"


def test_adding_a_hyperparameter_or_method_changes_no_other_draw():
    base = sample_hparams("dann", {"trade_off": SPACE["trade_off"]}, 7)
    grown = sample_hparams("dann", {**SPACE, "new_knob": ["uniform", 0, 1]}, 7)
    assert grown["trade_off"] == base["trade_off"]
    assert sample_hparams("cdan", {"trade_off": SPACE["trade_off"]}, 7) != base, "methods draw independently"


def test_unknown_distribution_is_a_config_error():
    with pytest.raises(ConfigError, match="log_uniform"):
        sample_hparams("dann", {"x": ["gaussian", 0, 1]}, 1)


def test_experiment_applies_and_records_the_draw(tiny_config, tmp_path):
    from dacl.experiment import run_experiment

    res = run_experiment(tiny_config("method=dann", "hparams_seed=3", "trainer.max_steps=10", "trainer.eval_every=10"), tmp_path)
    want = sample_hparams("dann", {"trade_off": ["log_uniform", 0.1, 10.0], "disc_hidden": ["choice", [256, 512, 1024]]}, 3)
    assert res["hparams_seed"] == 3 and res["variant"] == "hp3"
    assert {k: res["method_hparams"][k] for k in want} == want


@pytest.mark.slow
def test_submitit_local_sweep_survives_a_failing_configuration(tmp_path):
    """Hydra's submitit launcher runs each configuration as its own process; one fails on purpose (a batch larger
    than the dataset): the others finish and the collected table counts and lists the failure."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the 'cluster' extra (make installs it)")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "dacl", "run", "-m", "hydra/launcher=submitit_local", "benchmark=synthetic_shift",
         "method=source_only,dann", "trainer.batch_size=16,100000", "trainer.max_steps=4", "trainer.eval_every=2",
         "trainer.progress=false", "trainer.device=cpu", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "sweep").rglob("results.json"))) == 2
    assert len(list((tmp_path / "sweep").rglob("failed.json"))) == 2
    out = tmp_path / "table"
    subprocess.run([sys.executable, "-m", "dacl", "collect", str(tmp_path / "sweep"), "--out", str(out),
                    "--note", "analysis of this table"], check=True, capture_output=True, text=True, cwd=repo)
    md = out.with_suffix(".md").read_text()
    assert "- analysis of this table" in md
    failing = [line for line in md.splitlines() if "trainer.batch_size=100000" in line and line.startswith("|")]
    assert len(failing) == 2 and all("| failed |" in line for line in failing), md
    ok_rows = [line for line in md.splitlines() if "trainer.batch_size=16" in line and line.startswith("|")]
    assert len(ok_rows) == 2 and not any("failed" in line for line in ok_rows)
    assert "exceeds the" in md  # the error is listed
    assert json.loads(next((tmp_path / "sweep").rglob("failed.json")).read_text())["status"] == "failed"
