"""Atomic result files and the provenance every result records (commit, hardware, versions)."""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from dacl.errors import StorageError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file + rename, so readers never see a half-written file."""
    _atomic_write(path, "w", lambda f: f.write(text))


def _atomic_write(path: str | Path, mode: str, write: Callable[[Any], Any]) -> None:
    """A uniquely named temp file beside ``path``, fsynced, then renamed over it: concurrent writers never share a
    temp name, readers never see half a file, and a failed write (a full disk, a kill) removes its temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException as exc:
        # torch's zip writer reports a full disk as a RuntimeError ("unexpected pos"): look at the free space itself
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            (isinstance(exc, RuntimeError) and shutil.disk_usage(path.parent).free < 64 * 1024)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise StorageError(f"no space left on the device holding {path.parent} while writing {path.name}; free "
                               "some space or give the run a folder on another disk (hydra.run.dir=...)") from exc
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through ``_atomic_write`` (unique temp name, removed on any failure)."""
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))


def _json_default(o: Any) -> Any:
    return o.tolist() if isinstance(o, torch.Tensor) else str(o)


def git_commit(repo: str | Path | None = None) -> dict[str, Any]:
    """HEAD commit and whether the tree had uncommitted changes (a dirty run is not a reproducible one); when
    dirty, which tracked files differ, so a reader can tell changed code from, say, a table rewritten beside it."""
    cwd = str(repo or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                                 text=True, timeout=10).stdout.splitlines()
        info: dict[str, Any] = {"commit": sha or None, "dirty": bool(changed)}
        if changed:
            info["dirty_paths"] = sorted(line[3:] for line in changed)[:50]
        return info
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def versions() -> dict[str, str]:
    import numpy

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
