"""Faults a careful user can cause, each answered with one `dacl: error:` line and nothing misleading on disk."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dacl.engine.checkpoint import load_checkpoint_file
from dacl.engine.results import atomic_torch_save
from dacl.errors import CheckpointError
from dacl.experiment import run_experiment

FAST = ["benchmark=synthetic_shift", "method=source_only", "trainer.max_steps=6", "trainer.batch_size=16",
        "trainer.eval_every=3", "trainer.log_every=3", "trainer.progress=false", "trainer.device=cpu"]


def dacl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dacl", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("dacl: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


class _RunsCodeWhenUnpickled:
    """What an attacker would drop into a shared runs/ folder: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_dir.mkdir()
    torch.save({"format": "dacl-checkpoint", "version": 1, "step": 3, "max_steps": 6,
                "payload": _RunsCodeWhenUnpickled(marker)}, run_dir / "checkpoint.pt")
    line = one_error_line(dacl("run", *FAST, "trainer.resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert "cannot be loaded safely" in line and "checkpoint.pt" in line and "delete it" in line
    assert not marker.exists(), "the checkpoint's pickled code ran on resume"
    assert not (run_dir / "results.json").exists()


def test_a_checkpoint_dacl_did_not_write_is_refused(tmp_path):
    torch.save({"step": 3, "weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a dacl checkpoint"):
        load_checkpoint_file(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint_file(tmp_path / "cut.pt")


def test_a_paused_run_checkpoint_holds_only_safe_types_and_resumes(tiny_config, tmp_path):
    """The real checkpoint (RNG states included) loads with weights_only=True; resuming from it still finishes."""
    paused = run_experiment(tiny_config("method=dann"), tmp_path, stop_at=13)
    assert paused["status"] == "paused"
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # raises if any non-allow-listed type is inside
    assert ckpt["format"] == "dacl-checkpoint" and ckpt["step"] == 13
    assert ckpt["rng"]["python"]["words"].dtype == torch.int64 and ckpt["rng"]["numpy"]["words"].numel() == 624
    done = run_experiment(tiny_config("method=dann", "trainer.resume=true"), tmp_path)
    assert done["steps"] == 30


def test_a_failed_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def disk_full(obj, f, *a, **kw):
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == [], "a half-written temp file was left behind"
