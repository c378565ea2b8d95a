"""Faults a careful user can cause, each answered with one `dacl: error:` line and nothing misleading on disk."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dacl.engine.checkpoint import load_checkpoint_file
from dacl.engine.results import atomic_torch_save
from dacl.engine.run_folder import folder_status
from dacl.engine.signals import RunInterrupted
from dacl.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, StorageError
from dacl.experiment import run_experiment
from dacl.reliability import BAD_CONFIG, FAST, bad_data_cases, write_data_root

BAD_DATA = bad_data_cases()

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


def test_shared_weights_are_safetensors_and_crafted_weight_files_are_refused(tiny_config, tmp_path):
    """A run's final weights are model.safetensors (no pickle at all); a legacy .pt handed to a fine-tuning or TTA
    run loads only as a plain state_dict, so a crafted one is one error and its code never runs."""
    from safetensors.torch import load_file

    from dacl.engine.weights import load_weights

    run_experiment(tiny_config("method=source_only"), tmp_path / "src")
    assert not (tmp_path / "src" / "model.pt").exists()
    weights = load_file(str(tmp_path / "src" / "model.safetensors"))
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
    marker = tmp_path / "pwned"
    torch.save({"head.weight": _RunsCodeWhenUnpickled(marker)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a weights file dacl can read"):
        load_weights(tmp_path / "model.pt")
    line = one_error_line(dacl("run", *FAST, "method=linear_probe", f"method.checkpoint={tmp_path / 'model.pt'}",
                               f"hydra.run.dir={tmp_path / 'probe'}", cwd=tmp_path))
    assert "not a weights file dacl can read" in line and not marker.exists()
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "src" / "model.safetensors").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_weights(tmp_path / "cut.safetensors")


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
    with pytest.raises(StorageError, match="no space left on the device holding"):
        atomic_torch_save({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == [], "a half-written temp file was left behind"


# --- bad data: refused at load time, before any training, naming the file and the fix ---------------------------

@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_before_training_with_one_line(case, tiny_config, tmp_path):
    source, target, words = BAD_DATA[case]
    root = write_data_root(tmp_path / "data", source, target)
    with pytest.raises(DataError) as err:
        run_experiment(tiny_config("benchmark=mnist_usps", f"data_root={root}"), tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "run").exists(), "a run that never started must leave no folder"


def test_a_folder_where_a_file_belongs_and_an_unreadable_file(tiny_config, tmp_path, monkeypatch):
    root = write_data_root(tmp_path / "data")
    (root / "mnist.npz").unlink()
    (root / "mnist.npz").mkdir()
    with pytest.raises(DataError, match="mnist.npz is a folder"):
        run_experiment(tiny_config("benchmark=mnist_usps", f"data_root={root}"), tmp_path / "run")
    (root / "mnist.npz").rmdir()
    write_data_root(root)

    def no_permission(*a, **kw):  # tests run as root in CI, where chmod cannot take read access away
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "load", no_permission)
    with pytest.raises(DataError, match="permission denied; give your user read access"):
        run_experiment(tiny_config("benchmark=mnist_usps", f"data_root={root}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- bad configuration: every range checked before any work ------------------------------------------------------

@pytest.mark.parametrize("override", list(BAD_CONFIG))
def test_bad_configuration_is_one_error_before_any_work(override, tiny_config, tmp_path):
    with pytest.raises(ConfigError) as err:
        run_experiment(tiny_config(override), tmp_path / "run")
    assert BAD_CONFIG[override] in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists(), "no folder, no failed.json, no untrained model.pt"


def test_bad_configuration_through_the_cli_is_one_line(tmp_path):
    for override in ("trainer.batch_size=0", "+foo=1"):
        line = one_error_line(dacl("run", *FAST, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
        assert BAD_CONFIG[override] in line
        assert not (tmp_path / "run").exists()


def test_a_diverging_run_reports_the_nan_even_when_evaluation_comes_before_logging(tiny_config, tmp_path):
    with pytest.raises(NonFiniteLossError, match="lower trainer.lr"):
        run_experiment(tiny_config("method=source_only", "trainer.lr=1e30", "trainer.log_every=7",
                                   "trainer.eval_every=5"), tmp_path)
    assert json.loads((tmp_path / "failed.json").read_text())["status"] == "failed"


# --- signals, concurrency, disk ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_records_interrupted_and_resumes_bitwise(tmp_path):
    args = [*FAST, "trainer.max_steps=400", "trainer.log_every=5", "trainer.eval_every=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = dacl("run", *args, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dacl", "run", *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (run_dir / "train_log.csv").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert alive, "the run ended before it could be interrupted"
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err and "resume=true" in err
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "interrupted" and failed["signal"] == "SIGTERM" and 0 < failed["step"] < 400
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "results.json").exists()
    assert folder_status(run_dir)[0] == "interrupted"
    resumed = dacl("run", *args, "trainer.resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", run_dir))
    assert b["metrics"] == a["metrics"] and b["history"] == a["history"]
    assert b["resumed_from"]["step"] == failed["step"] and not (run_dir / "failed.json").exists()


def test_a_second_run_into_a_busy_folder_is_refused(tiny_config, tmp_path):
    from dacl.engine.run_folder import RunFolder

    first = RunFolder(tmp_path)
    first.acquire()  # another dacl process training in this folder
    try:
        with pytest.raises(ConfigError, match=f"run folder {tmp_path} is in use by dacl pid {os.getpid()}"):
            run_experiment(tiny_config(), tmp_path)
    finally:
        first.release()
    assert run_experiment(tiny_config("trainer.max_steps=10"), tmp_path)["status"] == "ok"


def test_a_full_disk_while_checkpointing_leaves_failed_json_and_no_temp_file(tiny_config, tmp_path, monkeypatch):
    real_save = torch.save

    def disk_full(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("format") == "dacl-checkpoint":
            f.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(StorageError, match="no space left"):
        run_experiment(tiny_config("trainer.ckpt_every=10"), tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "results.json").exists()
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert failed["status"] == "failed" and "no space left" in failed["error"]


def test_a_failure_to_write_failed_json_is_reported_on_stderr(tiny_config, tmp_path, monkeypatch, capsys):
    from dacl.engine import run_folder

    real = run_folder.atomic_write_json

    def refuse_failed_json(path, obj):
        if Path(path).name == "failed.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(run_folder, "atomic_write_json", refuse_failed_json)
    with pytest.raises(NonFiniteLossError):
        run_experiment(tiny_config("trainer.lr=1e30", "trainer.log_every=1"), tmp_path)
    err = capsys.readouterr().err
    assert "dacl: error: could not write" in err and "failed.json" in err and "loss became" in err


def test_resuming_a_finished_run_records_what_it_restored(tiny_config, tmp_path):
    first = run_experiment(tiny_config("trainer.ckpt_every=10"), tmp_path)
    assert first["resumed_from"] is None
    again = run_experiment(tiny_config("trainer.ckpt_every=10", "trainer.resume=true"), tmp_path)
    assert again["resumed_from"]["step"] == 30 and again["resumed_from"]["commit"] == first["commit"]
    assert again["metrics"] == first["metrics"]


# --- the collector trusts only current, complete state ------------------------------------------------------------

def test_the_collector_takes_the_newest_status_and_counts_every_run_it_lists(tiny_config, tmp_path):
    from dacl.reporting import aggregate, load_runs

    runs = tmp_path / "runs"
    for seed in (0, 1):
        run_experiment(tiny_config(f"seed={seed}", "trainer.max_steps=10"), runs / f"seed{seed}")
    time.sleep(0.01)  # a failure newer than the result beside it
    (runs / "seed1" / "failed.json").write_text(json.dumps({"status": "failed", "error": "crashed on a rerun"}))
    (runs / "seed2").mkdir()
    (runs / "seed2" / "train_log.csv").write_text("step,loss\n10,1.0\n")  # killed before any status file
    ok, failed = load_runs([runs])
    assert [r["seed"] for r in ok] == [0]
    assert sorted(f["error"].split("]")[0] for f in failed) == ["[failed", "[incomplete"]
    rows = aggregate(ok, failed=failed)
    assert sum(r["n_failed"] for r in rows if r["selection"] == "last") == len(failed) == 2


def _any_rank_worker(rank: int, path: str, out: str) -> None:
    import torch.distributed as tdist

    from dacl.distributed import DistContext, any_rank

    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, rank)
    results = [any_rank(rank == 1, ctx, torch.device("cpu")), any_rank(False, ctx, torch.device("cpu"))]
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    tdist.destroy_process_group()


def test_under_torchrun_a_stop_asked_on_one_rank_stops_every_rank(tmp_path):
    """A signal that reaches one rank only (or the ranks at different steps) must stop all of them at one step,
    or the others would wait forever in the next gradient all-reduce."""
    import torch.multiprocessing as mp

    mp.spawn(_any_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [[True, False], [True, False]]


def test_a_signal_during_test_time_adaptation_saves_the_source_model_and_resumes(tiny_config, tmp_path, monkeypatch):
    """SIGTERM after training, while Tent adapts on the target test set: failed.json says interrupted (phase
    test-time adaptation), the trained source model is checkpointed, and trainer.resume=true adapts without
    training again, to the accuracy of an uninterrupted run."""
    import signal

    import dacl.engine.tta as tta

    full = run_experiment(tiny_config("method=tent"), tmp_path / "full")
    calls = []

    def stop_on_the_third_batch():
        calls.append(1)
        return signal.SIGTERM if len(calls) == 3 else None

    monkeypatch.setattr(tta, "_stop_requested", stop_on_the_third_batch)
    with pytest.raises(RunInterrupted, match="during test-time adaptation"):
        run_experiment(tiny_config("method=tent"), tmp_path / "cut")
    status, rec = folder_status(tmp_path / "cut")
    assert status == "interrupted" and rec["phase"] == "test-time adaptation" and rec["signal"] == "SIGTERM"
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 30
    monkeypatch.setattr(tta, "_stop_requested", lambda: None)
    resumed = run_experiment(tiny_config("method=tent", "trainer.resume=true"), tmp_path / "cut")
    assert resumed["resumed_from"]["step"] == 30  # no step trained twice
    tta_full, tta_resumed = (r["metrics"]["test_time_adaptation"] for r in (full, resumed))
    assert tta_resumed["target_test_acc"] == tta_full["target_test_acc"]
