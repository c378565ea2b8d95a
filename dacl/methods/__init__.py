"""Methods register on import; ``Method``/``Plugin`` are the contract (see docs/adding_a_method.md)."""
from dacl.methods import cl, da, plugins, tta  # noqa: F401
from dacl.methods.base import Batch, Experience, Hooks, Method, Plugin, StepState

__all__ = ["Method", "Plugin", "Hooks", "Batch", "StepState", "Experience"]
