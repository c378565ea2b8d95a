"""Error types whose messages name the fix.

The CLI turns any ``DaclError`` into a single ``dacl: error: ...`` line and exit code 2, so users
see one actionable sentence instead of a traceback.
"""
from __future__ import annotations

import math
from typing import Any


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


def check_number(option: str, value: Any, *, integer: bool = False, minimum: float | None = None,
                  below: float | None = None, exclusive: bool = False, optional: bool = False) -> None:
    """One ``ConfigError`` line naming the option, its value and the allowed range."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{option} must be {kind}, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ConfigError(f"{option} must be {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"{option} must be < {below:g}, got {value!r}")
