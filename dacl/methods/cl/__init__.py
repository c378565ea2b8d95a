"""Continual-learning plugins (one file each, registered on import); they stack through the lifecycle hooks."""
from dacl.methods.cl import agem, der, ewc, lwf, replay, si  # noqa: F401
