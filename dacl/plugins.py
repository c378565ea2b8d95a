"""Discovery of built-in modules and third-party packages that register into dacl's registries.

An outside package adds methods by declaring, in its own pyproject.toml::

    [project.entry-points."dacl.plugins"]
    mypkg = "mypkg.dacl_methods"     # a module whose import registers things

dacl's own ``baselines`` package uses exactly this path; the core never imports it. A package ships its
configs (``method/<name>.yaml``, ``strategy/<name>.yaml``, ...) by naming a package that holds those folders::

    [project.entry-points."dacl.configs"]
    mypkg = "mypkg.configs"

and ``dacl run method=<name>`` finds them on Hydra's search path, next to dacl's own ``configs/``.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import warnings
from importlib.metadata import entry_points
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dacl.plugins"
CONFIG_ENTRY_POINT_GROUP = "dacl.configs"

BUILTIN_MODULES = (
    "dacl.engine.optim",
    "dacl.models",
    "dacl.models.text",
    "dacl.data.sources",
    "dacl.data.office",
    "dacl.data.cifar",
    "dacl.data.imagenet",
    "dacl.data.corruptions",
    "dacl.data.streams",
    "dacl.benchmarks",
    "dacl.methods",
    "dacl.validators",
)


def load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_entry_points() -> list[str]:
    """Import every ``dacl.plugins`` entry point; a broken plugin warns instead of breaking dacl."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type) and not hasattr(obj, "__path__"):
                obj()  # an entry point may also name a register() function
            loaded.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - one bad plugin must not take dacl down
            warnings.warn(f"dacl plugin '{ep.name}' ({ep.value}) failed to load: {exc}", stacklevel=2)
    return loaded


@functools.lru_cache(maxsize=1)
def plugin_config_dirs() -> tuple[Path, ...]:
    """Config folders that installed packages contribute through ``dacl.configs`` entry points (found without
    importing the packages' code; a package that cannot be found warns)."""
    found = []
    for ep in entry_points(group=CONFIG_ENTRY_POINT_GROUP):
        spec = importlib.util.find_spec(ep.value)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            warnings.warn(f"dacl config entry point '{ep.name}' names '{ep.value}', which is not an installed package",
                          stacklevel=2)
            continue
        found.append(Path(locations[0]))
    return tuple(found)
