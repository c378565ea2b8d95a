"""Domain-adaptation methods (one file each, registered on import)."""
from dacl.methods.da import dann, source_only  # noqa: F401
