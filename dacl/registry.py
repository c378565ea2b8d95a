"""One small generic registry for methods, benchmarks, backbones, validators and the rest.

Names map to factories (classes or functions). Built-in modules and ``dacl.plugins`` entry points are
imported lazily on first lookup, so ``import dacl`` stays cheap and outside packages can add entries
without touching dacl.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

from dacl.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory map with a decorator for registration and helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("dann")``. Re-registering a name is an error (silent shadowing hides bugs)."""

        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered by {_describe(existing)}")
            self._entries[name] = obj
            if isinstance(obj, type):
                obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        _ensure_loaded()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            hint = did_you_mean(str(name), list(self._entries))
            raise UnknownNameError(f"unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {known}")
        return self._entries[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Look up ``name`` and call its factory."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        _ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        _ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def did_you_mean(name: str, options: list[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _describe(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


_loaded = False


def _ensure_loaded() -> None:
    """Import built-ins and entry-point plugins once, on first lookup."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from dacl.plugins import load_builtins, load_entry_points

    load_builtins()
    load_entry_points()


METHODS: Registry = Registry("method")
PLUGINS: Registry = Registry("plugin")
BENCHMARKS: Registry = Registry("benchmark")
DATASETS: Registry = Registry("dataset")
BACKBONES: Registry = Registry("backbone")
VALIDATORS: Registry = Registry("validator")
OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")
FEATURE_ADAPTERS: Registry = Registry("feature-space adapter")  # shallow DA on precomputed features
FEATURE_CLASSIFIERS: Registry = Registry("feature classifier")
STREAMS: Registry = Registry("stream")  # continual-learning task sequences

ALL_REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (METHODS, PLUGINS, BENCHMARKS, DATASETS, BACKBONES, VALIDATORS, OPTIMIZERS, SCHEDULES, STREAMS)
}
