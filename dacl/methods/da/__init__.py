"""Domain-adaptation methods (one file each, registered on import)."""
from dacl.methods.da import cdan, coral, dann, deepjdot, feature_space, mmd, self_training, sinkhorn, source_only  # noqa: F401
