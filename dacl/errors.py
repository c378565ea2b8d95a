"""Error types whose messages name the fix.

The CLI turns any ``DaclError`` into a single ``dacl: error: ...`` line and exit code 2, so users
see one actionable sentence instead of a traceback.
"""
from __future__ import annotations


class DaclError(Exception):
    """Base for errors a user can fix (bad name, missing file, bad config, diverged run)."""


class UnknownNameError(DaclError, KeyError):
    """A registry lookup failed; the message lists what is registered."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


class DataError(DaclError):
    """A dataset file is missing, unreadable or malformed."""


class ConfigError(DaclError, ValueError):
    """A configuration value is invalid (also a ValueError, what plain-Python callers expect of a bad argument)."""


class NonFiniteLossError(DaclError):
    """Training diverged (NaN/inf loss)."""


class CheckpointError(DaclError):
    """A checkpoint is not one dacl wrote, is damaged, or cannot be loaded without executing code."""


class StorageError(DaclError):
    """A result or checkpoint could not be written (no space left on the device)."""
