"""Test-time adaptation methods (one file each, registered on import)."""
from dacl.methods.tta import bn_adapt, shot_im, tent  # noqa: F401
