"""SIGTERM (how SLURM and most schedulers preempt) and SIGINT (Ctrl-C) stop a run cleanly between two steps.

The handler only sets a flag; the loop checks it after each step (a Python attribute read, no device sync),
saves a checkpoint and raises ``RunInterrupted``. The run folder then records ``failed.json`` with status
``interrupted`` and the process exits with 128 + the signal number, so a requeued job resumes with
``resume=true`` exactly where it stopped. A second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from dacl.errors import DaclError

HANDLED = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(DaclError):
    """A signal stopped the run; a checkpoint of the last finished step was saved."""

    def __init__(self, signum: int, step: int, phase: str = "training") -> None:
        self.signum, self.step, self.phase = signum, step, phase
        where = f"after step {step}" if phase == "training" else f"during {phase} (after {step} batches)"
        super().__init__(f"interrupted by {signal.Signals(signum).name} {where}; a checkpoint was saved: rerun "
                         "the same command with trainer.resume=true to continue")


class _StopRequest:
    signum: int | None = None


STOP = _StopRequest()


def requested() -> int | None:
    """The signal that asked the run to stop, if any."""
    return STOP.signum


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block SIGTERM/SIGINT request a stop at the next step boundary instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if STOP.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        STOP.signum = signum

    previous = {s: signal.getsignal(s) for s in HANDLED}
    STOP.signum = None
    for s in HANDLED:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        STOP.signum = None
