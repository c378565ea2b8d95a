"""Continual-learning plugins (one file each, registered on import); they stack through the lifecycle hooks."""
from dacl.methods.cl import ewc, lwf, replay  # noqa: F401
