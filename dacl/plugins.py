"""Discovery of built-in modules and third-party packages that register into dacl's registries.

An outside package adds methods by declaring, in its own pyproject.toml::

    [project.entry-points."dacl.plugins"]
    mypkg = "mypkg.dacl_methods"     # a module whose import registers things

dacl's own ``baselines`` package uses exactly this path; the core never imports it.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from importlib.metadata import entry_points

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dacl.plugins"

BUILTIN_MODULES = (
    "dacl.engine.optim",
    "dacl.models",
    "dacl.models.text",
    "dacl.data.sources",
    "dacl.data.office",
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
