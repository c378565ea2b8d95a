"""One run folder's life, the same for every kind of run: one writer, a status that tells the truth.

- **One writer**: an ``fcntl`` lock on ``.dacl.lock``; a second run into a busy folder is refused with a clear
  message instead of both appending to the same logs and results.
- **Status files**: ``running.json`` while a run trains, then ``results.json`` (success) or ``failed.json``
  (status ``failed`` or ``interrupted``). A collector takes the newest of the three (``folder_status``); a folder
  with none of them (killed before it started, or by ``kill -9`` on an old dacl) counts as ``incomplete``.
- **Nothing misleading**: a run that fails before training starts (bad config, bad data) leaves the folder as it
  was, and removes it if Hydra only just created it; a stale result is removed only once a new run really starts.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

from dacl.engine.results import atomic_write_json
from dacl.errors import ConfigError

LOCK, RUNNING, RESULTS, FAILED = ".dacl.lock", "running.json", "results.json", "failed.json"
T = TypeVar("T")
HYDRA_FILES = {".hydra"}  # Hydra's config copy; the job's .log file is matched by suffix


def only_hydra_files(folder: Path) -> bool:
    """True if ``folder`` holds nothing but what Hydra writes when a job starts (no run has used it)."""
    return all(p.name in HYDRA_FILES or p.name == LOCK or p.suffix == ".log" for p in folder.iterdir())


class RunFolder:
    """Owns ``path`` for one run: lock, running marker, and exactly one final status file."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled  # enabled=False: a torchrun rank > 0 writes nothing
        self._lock_file = None

    def acquire(self) -> None:
        if not self.enabled:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(f"run folder {self.path} is in use by {holder}; wait for it to finish, or give this run "
                              "another folder (tag=..., or hydra.run.dir=...)") from None
        f.seek(0)
        f.truncate()
        f.write(f"dacl pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._lock_file = f

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def start(self, resume: bool, record: dict[str, Any]) -> None:
        """The run really begins: stale results go (unless resuming), the running marker is written."""
        if not self.enabled:
            return
        if not resume:
            (self.path / RESULTS).unlink(missing_ok=True)  # a stale result must never survive a new run
        (self.path / FAILED).unlink(missing_ok=True)
        atomic_write_json(self.path / RUNNING, {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                                **record})

    def succeed(self, results: dict[str, Any]) -> None:
        if not self.enabled:
            return
        atomic_write_json(self.path / RESULTS, results)
        (self.path / RUNNING).unlink(missing_ok=True)

    def fail(self, record: dict[str, Any]) -> None:
        """Write failed.json; if even that fails (a full disk), say so on stderr rather than stay silent."""
        if not self.enabled:
            return
        try:
            atomic_write_json(self.path / FAILED, record)
        except Exception as exc:  # noqa: BLE001
            print(f"dacl: error: could not write {self.path / FAILED} ({type(exc).__name__}: {exc}); "
                  f"the run {record.get('status', 'failed')}: {record.get('error')}", file=sys.stderr)
            return
        (self.path / RUNNING).unlink(missing_ok=True)

    def pause(self) -> None:
        """Paused on purpose (a checkpoint to resume from, no result yet): no longer running, not finished."""
        if self.enabled:
            (self.path / RUNNING).unlink(missing_ok=True)

    def discard_if_unused(self) -> None:
        """After a failure before training: remove what Hydra wrote for this job (.hydra/, its .log), then the
        run folders below the working directory that are left empty (runs/<tag>/<benchmark>/...). A folder given
        outside the working directory (hydra.run.dir=/abs/path) may be the user's own: it is emptied, not removed."""
        if not (self.enabled and self.path.is_dir() and only_hydra_files(self.path)):
            return
        for p in self.path.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        cwd = Path.cwd().resolve()
        for folder in (self.path.resolve(), *self.path.resolve().parents):
            if cwd not in folder.parents or any(folder.iterdir()):
                break
            folder.rmdir()


def folder_status(folder: Path) -> tuple[str, dict[str, Any]]:
    """(status, record) of a run folder: the newest of results.json / failed.json / running.json decides, so a
    result beside a newer failure or a newer start is not taken as current; none of them: ``incomplete``."""
    present = [(p.stat().st_mtime_ns, name, p) for name in (RESULTS, FAILED, RUNNING)
               if (p := folder / name).is_file()]
    if not present:
        return "incomplete", {"error": "no results.json, failed.json or running.json: the run never finished "
                                       "(killed, or stopped before it wrote a status)"}
    _, name, path = max(present)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return "failed", {"error": f"unreadable {name}: {exc}"}
    if name == RESULTS:
        return ("ok" if record.get("status") == "ok" else "failed"), record
    if name == RUNNING:
        return "running", {**record, "error": f"running (pid {record.get('pid')} on {record.get('host')}) or killed"}
    return str(record.get("status", "failed")), record


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_in_folder(path: str | Path, *, main: bool, resume: bool, record: dict[str, Any],
                  prepare: Callable[[], T], execute: Callable[[T], dict[str, Any]],
                  keep_setup_failures: bool = False) -> dict[str, Any]:
    """The one way a run uses its folder. ``prepare`` builds everything (config, data, model) and may fail
    without touching the folder; ``execute`` trains and returns the results (``status: ok``, written as
    results.json) or a non-final status (``paused``; ``worker`` on torchrun ranks > 0). Any failure while
    training writes failed.json (``interrupted`` for a signal) and is re-raised.
    ``keep_setup_failures``: in a sweep, a configuration that cannot even start is recorded too (failed.json with
    ``stage: setup``), so the collected table counts it instead of silently missing a cell."""
    from dacl.engine.signals import RunInterrupted

    folder = RunFolder(path, enabled=main)
    try:
        ctx = prepare()
    except BaseException as exc:
        if keep_setup_failures and isinstance(exc, Exception):
            folder.fail({"status": "failed", "stage": "setup", "error": f"{type(exc).__name__}: {exc}", **record})
        else:
            folder.discard_if_unused()
        raise
    folder.acquire()
    try:
        folder.start(resume, {"started_at": now(), **record})
        try:
            out = execute(ctx)
        except RunInterrupted as exc:
            folder.fail({"status": "interrupted", "error": str(exc), "step": exc.step, "phase": exc.phase,
                         "signal": signal.Signals(exc.signum).name, **record})
            raise
        except BaseException as exc:
            folder.fail({"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                         **record})
            raise
        if out.get("status") == "ok":
            folder.succeed(out)
        else:
            folder.pause()
        return out
    finally:
        folder.release()
