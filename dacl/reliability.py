"""The fault matrix: what a careful user can do wrong, run as that user would (``dacl`` in a subprocess), with
what dacl is expected to do and what it did. ``dacl reproduce reliability_faults`` runs each case
(``measurement=fault_case``) into ``paper_results/reliability/faults.md``; ``tests/test_faults.py`` asserts the
same behaviour case by case.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dacl.studies.measure import measurement
from dacl.engine.results import atomic_write_text

FAST = ["benchmark=synthetic_shift", "method=source_only", "trainer.max_steps=6", "trainer.batch_size=16",
        "trainer.eval_every=3", "trainer.log_every=3", "trainer.progress=false", "trainer.device=cpu"]


def random_digits(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.arange(n) % 10


def write_data_root(folder: Path, source: dict | None = None, target: dict | None = None) -> Path:
    """mnist.npz (source, 28 px) and usps.npz (target, 16 px) bundles, valid unless an array is replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, bad, size in (("mnist", source or {}, 28), ("usps", target or {}, 16)):
        (xtr, ytr), (xte, yte) = random_digits(60, size), random_digits(30, size, seed=1)
        np.savez(folder / f"{name}.npz", **{"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, **bad})
    return folder


def bad_data_cases() -> dict[str, tuple[dict, dict, list[str]]]:
    """case -> (source arrays replaced, target arrays replaced, words the one-line error must contain)."""
    rng = np.random.default_rng(0)
    digits = random_digits(30)[0]
    return {
        "float images in [0, 1]": ({"x_train": rng.random((60, 28, 28), dtype=np.float32)}, {},
                                   ["mnist.npz", "float32", "0-1 range", "uint8"]),
        "channel-first images": ({}, {"x_test": digits[:, None]}, ["usps.npz", "channel-first", "np.moveaxis"]),
        "inf pixels": ({}, {"x_test": np.full((30, 16, 16), np.inf, np.float32)}, ["usps.npz", "NaN/inf"]),
        "5 channels on a grey benchmark": ({}, {"x_train": np.zeros((60, 16, 16, 5), np.uint8)}, ["usps.npz", "5 channels"]),
        "float labels": ({"y_train": np.arange(60) % 10 + 0.5}, {}, ["mnist.npz", "float64", "integer"]),
        "NaN labels in the target test split": ({}, {"y_test": np.full(30, np.nan)}, ["usps.npz: y_test", "NaN"]),
        "negative labels in the target test split": ({}, {"y_test": np.r_[-1, np.arange(29) % 10]},
                                                     ["usps.npz: y_test", "negative"]),
        "a source label of -1": ({"y_train": np.r_[-1, np.arange(59) % 10]}, {}, ["mnist.npz: y_train", "negative"]),
        "labels shaped (N, 1)": ({}, {"y_train": (np.arange(60) % 10)[:, None]}, ["usps.npz: y_train", "1-D"]),
        "an empty split": ({}, {"x_test": np.zeros((0, 16, 16), np.uint8), "y_test": np.zeros(0, np.int64)},
                           ["usps.npz: x_test", "empty"]),
    }


# override -> words of the expected one-line error
BAD_CONFIG = {
    "trainer.batch_size=0": "trainer.batch_size must be >= 1",
    "trainer.batch_size=-1": "trainer.batch_size must be >= 1",
    "trainer.max_steps=0": "trainer.max_steps must be >= 1",
    "trainer.log_every=0": "trainer.log_every must be >= 1",
    "trainer.eval_every=0": "trainer.eval_every must be >= 1",
    "trainer.lr=-1": "trainer.lr must be >= 0",
    "trainer.device=cdua": "unknown device 'cdua'",
    "benchmark.val_fraction=0": "benchmark.val_fraction must be in (0, 1)",
    "+foo=1": "unknown dacl run option(s) ['foo']",
    "+model.foo=1": "model 'lenet' got an unknown option",
    "+benchmark.foo=1": "benchmark 'synthetic_shift' got an unknown option",
}


@dataclass
class Outcome:
    command: str
    observed: str
    passed: bool


@dataclass
class Case:
    name: str
    expected: str
    run: Callable[[Path], Outcome]


def _dacl(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dacl", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dacl:")]
    return lines[-1] if lines else (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def _one_line(proc: subprocess.CompletedProcess, words: list[str], run_dir: Path) -> tuple[str, bool]:
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dacl: error:")]
    ok = (proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
          and all(w in errors[0] for w in words) and not run_dir.exists())
    left = "; run folder left behind" if run_dir.exists() else ""
    return f"exit {proc.returncode}: {_error_line(proc)}{left}", ok


def _cmd(args: list[str]) -> str:
    return "dacl " + shlex.join(args)


def _malicious_checkpoint(tmp: Path) -> Outcome:
    run_dir, marker = tmp / "run", tmp / "pwned"
    run_dir.mkdir(parents=True)

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "dacl-checkpoint", "version": 1, "step": 3, "payload": RunsCode()}, run_dir / "checkpoint.pt")
    args = ["run", *FAST, "trainer.resume=true", f"hydra.run.dir={run_dir}"]
    proc = _dacl(args, tmp)
    ran = marker.exists()
    return Outcome(_cmd(args) + "  (checkpoint.pt pickles os.system)",
                   f"exit {proc.returncode}: {_error_line(proc)}; payload {'RAN' if ran else 'not run'}",
                   proc.returncode == 2 and not ran and "cannot be loaded safely" in proc.stderr)


def _malicious_weights(tmp: Path) -> Outcome:
    """A shared weights file that pickles code, handed to a fine-tuning baseline as its pre-trained model."""
    marker = tmp / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"head.weight": RunsCode()}, tmp / "model.pt")
    args = ["run", *FAST, "method=linear_probe", f"method.checkpoint={tmp / 'model.pt'}", f"hydra.run.dir={tmp / 'run'}"]
    proc = _dacl(args, tmp)
    ran = marker.exists()
    return Outcome(_cmd(args) + "  (model.pt pickles os.system)",
                   f"exit {proc.returncode}: {_error_line(proc)}; payload {'RAN' if ran else 'not run'}",
                   proc.returncode == 2 and not ran and "not a weights file dacl can read" in proc.stderr)


def _bad_data(case: str) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        source, target, words = bad_data_cases()[case]
        root = write_data_root(tmp / "data", source, target)
        args = ["run", "benchmark=mnist_usps", f"data_root={root}", *FAST[1:], f"hydra.run.dir={tmp / 'run'}"]
        observed, ok = _one_line(_dacl(args, tmp), words, tmp / "run")
        return Outcome(_cmd(args), observed, ok)
    return run


def _folder_for_file(tmp: Path) -> Outcome:
    root = write_data_root(tmp / "data")
    (root / "mnist.npz").unlink()
    (root / "mnist.npz").mkdir()
    args = ["run", "benchmark=mnist_usps", f"data_root={root}", *FAST[1:], f"hydra.run.dir={tmp / 'run'}"]
    observed, ok = _one_line(_dacl(args, tmp), ["is a folder"], tmp / "run")
    return Outcome(_cmd(args) + "  (mnist.npz is a folder)", observed, ok)


def _unreadable_file(tmp: Path) -> Outcome:
    root = write_data_root(tmp / "data")
    (root / "mnist.npz").chmod(0)
    args = ["run", "benchmark=mnist_usps", f"data_root={root}", *FAST[1:], f"hydra.run.dir={tmp / 'run'}"]
    if os.access(root / "mnist.npz", os.R_OK):  # root reads any file: the permission cannot be taken away here
        return Outcome(_cmd(args) + "  (chmod 0 mnist.npz)", "not checked: this user (root) can read any file; "
                       "tests/test_faults.py simulates the PermissionError instead", True)
    observed, ok = _one_line(_dacl(args, tmp), ["permission denied"], tmp / "run")
    return Outcome(_cmd(args) + "  (chmod 0 mnist.npz)", observed, ok)


def _bad_config(override: str) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        args = ["run", *FAST, override, f"hydra.run.dir={tmp / 'run'}"]
        observed, ok = _one_line(_dacl(args, tmp), [BAD_CONFIG[override]], tmp / "run")
        return Outcome(_cmd(args), observed, ok)
    return run


def _diverging(tmp: Path) -> Outcome:
    args = ["run", *FAST, "trainer.lr=1e30", "trainer.log_every=7", "trainer.eval_every=5", f"hydra.run.dir={tmp / 'run'}"]
    proc = _dacl(args, tmp)
    failed = tmp / "run" / "failed.json"
    ok = proc.returncode == 2 and "loss became nan" in proc.stderr and failed.exists() and "Traceback" not in proc.stderr
    return Outcome(_cmd(args), f"exit {proc.returncode}: {_error_line(proc)}", ok)


def _killed_and_resumed(tmp: Path, sig: int, label: str) -> Outcome:
    """Train, stop the process with ``sig`` once training has started, resume, compare with an uninterrupted run."""
    args = ["run", *FAST, "trainer.max_steps=400", "trainer.log_every=5", "trainer.eval_every=100", "trainer.ckpt_every=25"]
    full = _dacl([*args, f"hydra.run.dir={tmp / 'full'}"], tmp)
    run_dir = tmp / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "dacl", *args, f"hydra.run.dir={run_dir}"], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for = run_dir / ("checkpoint.pt" if sig == signal.SIGKILL else "train_log.csv")
    deadline = time.time() + 300
    while not wait_for.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random().uniform(0.0, 0.5))  # a random step after training (and checkpointing) began
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    status = json.loads((run_dir / "failed.json").read_text()) if (run_dir / "failed.json").exists() else {}
    stopped = f"exit {proc.returncode}, failed.json status {status.get('status', 'none')}"
    resumed = _dacl([*args, "trainer.resume=true", f"hydra.run.dir={run_dir}"], tmp)
    same = False
    if full.returncode == 0 and resumed.returncode == 0:
        a, b = (json.loads((d / "results.json").read_text()) for d in (tmp / "full", run_dir))
        same = a["metrics"] == b["metrics"] and a["history"] == b["history"]
        stopped += f"; resumed from step {b['resumed_from']['step']}: final metrics {'equal' if same else 'DIFFER'}"
    expected_exit = -signal.SIGKILL if sig == signal.SIGKILL else 128 + sig
    ok = proc.returncode == expected_exit and same and (sig == signal.SIGKILL or status.get("status") == "interrupted")
    if proc.returncode == 0:
        stopped = "the run finished before the signal arrived (nothing interrupted); " + stopped
    return Outcome(f"{_cmd([*args, 'hydra.run.dir=<run>'])}; {label}; then the same with trainer.resume=true",
                   stopped, ok)


def _concurrent(tmp: Path) -> Outcome:
    args = ["run", *FAST, "trainer.max_steps=400", "trainer.ckpt_every=20", f"hydra.run.dir={tmp / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "dacl", *args], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [(p.communicate(timeout=600)[1], p.returncode) for p in procs]
    codes = sorted(rc for _, rc in outs)
    refused = sum("is in use by dacl pid" in err for err, _ in outs)
    run_dir = tmp / "run"
    rows = (run_dir / "train_log.csv").read_text().splitlines()[1:] if (run_dir / "train_log.csv").exists() else []
    steps = [r.split(",")[0] for r in rows]
    ok = codes.count(0) >= 1 and codes.count(0) + refused == 3 and len(steps) == len(set(steps)) \
        and (run_dir / "results.json").exists() and not (run_dir / "failed.json").exists() and not list(run_dir.glob("*.tmp"))
    return Outcome(f"3 x at once: {_cmd(args)}",
                   f"exit codes {codes}; {refused} refused as busy; train_log rows {len(steps)} (unique {len(set(steps))})",
                   ok)


def _full_disk(tmp: Path) -> Outcome:
    """The run folder on a 256 KiB tmpfs: logs fit, the first checkpoint does not."""
    disk = tmp / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    args = ["run", *FAST, "trainer.ckpt_every=3", f"hydra.run.dir={disk / 'run'}"]
    if mounted.returncode != 0:
        return Outcome(_cmd(args), "not simulated: mounting a small tmpfs needs root here; tests/test_faults.py makes "
                       "torch.save fail with ENOSPC instead", True)
    try:
        proc = _dacl(args, tmp)
        run_dir = disk / "run"
        temps = list(run_dir.glob("*.tmp"))
        failed = run_dir / "failed.json"
        status = json.loads(failed.read_text()).get("status") if failed.exists() else "none"
        ok = proc.returncode == 2 and "no space left" in proc.stderr and not temps and status == "failed"
        return Outcome(_cmd(args) + "  (run folder on a 256 KiB tmpfs)",
                       f"exit {proc.returncode}: {_error_line(proc)}; failed.json status {status}; "
                       f"{len(temps)} temp file(s) left", ok)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _resume_finished(tmp: Path) -> Outcome:
    args = ["run", *FAST, "trainer.ckpt_every=3", f"hydra.run.dir={tmp / 'run'}"]
    first, again = _dacl(args, tmp), _dacl([*args, "trainer.resume=true"], tmp)
    res = json.loads((tmp / "run" / "results.json").read_text()) if again.returncode == 0 else {}
    restored = res.get("resumed_from") or {}
    ok = first.returncode == 0 and again.returncode == 0 and restored.get("step") == 6 and bool(restored.get("commit"))
    return Outcome(_cmd([*args, "trainer.resume=true"]) + "  (after the run finished)",
                   f"exit {again.returncode}; results.json resumed_from = {restored}", ok)


def _stale_result(tmp: Path) -> Outcome:
    from dacl.reporting import load_runs

    args = ["run", *FAST, f"hydra.run.dir={tmp / 'runs' / 'a'}"]
    _dacl(args, tmp)
    time.sleep(0.01)
    (tmp / "runs" / "a" / "failed.json").write_text(json.dumps({"status": "failed", "error": "a newer run crashed"}))
    (tmp / "runs" / "b").mkdir(parents=True)
    (tmp / "runs" / "b" / "train_log.csv").write_text("step,loss\n3,1.0\n")
    ok_runs, failed = load_runs([tmp / "runs"])
    ok = not ok_runs and len(failed) == 2
    return Outcome("collect: results.json beside a newer failed.json; a folder with a train log and no status",
                   f"{len(ok_runs)} results averaged; listed: {[f['error'] for f in failed]}", ok)


def cases() -> list[Case]:
    one_line = "one `dacl: error:` line naming the file and the fix, exit 2, no run folder"
    out = [Case("malicious checkpoint on resume", "refused with one error line; its pickled code never runs",
                _malicious_checkpoint),
           Case("malicious pre-trained weights for fine-tuning", "refused with one error line; its pickled code never "
                "runs (runs share weights as model.safetensors, which holds no code)", _malicious_weights)]
    out += [Case(f"bad data: {name}", one_line, _bad_data(name)) for name in bad_data_cases()]
    out += [Case("bad data: a folder where mnist.npz should be", one_line, _folder_for_file),
            Case("bad data: an unreadable file", one_line, _unreadable_file)]
    out += [Case(f"bad config: {o}", "one `dacl: error:` line naming the option and its range, exit 2, no run folder",
                 _bad_config(o)) for o in BAD_CONFIG]
    out += [Case("diverging run, eval_every not a multiple of log_every",
                 "the NaN message (not a metric crash), failed.json", _diverging),
            Case("SIGTERM mid-run, then resume", "checkpoint saved, failed.json 'interrupted', exit 143; resume ends "
                 "with the uninterrupted run's metrics", lambda t: _killed_and_resumed(t, signal.SIGTERM, "SIGTERM")),
            Case("kill -9 at a random step, then resume", "resume from the last checkpoint ends with the uninterrupted "
                 "run's metrics", lambda t: _killed_and_resumed(t, signal.SIGKILL, "SIGKILL after the first checkpoint")),
            Case("three identical runs into one folder at once", "one trains, the others are refused (folder busy); "
                 "no duplicated log rows, no results.json beside failed.json", _concurrent),
            Case("full disk while checkpointing", "one `dacl: error:` line (no space left), failed.json, no temp file left",
                 _full_disk),
            Case("resume=true on a finished run", "results.json records resumed_from (step, commit)", _resume_finished),
            Case("collector: stale and incomplete folders", "neither is averaged; both are listed and counted",
                 _stale_result)]
    return out


def slug(name: str) -> str:
    """A case's key in a study grid (``case=sigterm_mid_run_then_resume``)."""
    import re

    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"-(\d)", r"minus\1", name.lower())).strip("_")


def run_case(name: str) -> dict[str, object]:
    """One fault case (by its slug) in a fresh temporary folder: its command, what was expected and observed, and
    whether it passed. The temporary folder is shown as <tmp>."""
    import tempfile

    by_slug = {slug(c.name): c for c in cases()}
    if name not in by_slug:
        from dacl.errors import ConfigError
        from dacl.registry import did_you_mean

        raise ConfigError(f"unknown fault case '{name}'.{did_you_mean(name, list(by_slug))} Cases: {', '.join(by_slug)}")
    case = by_slug[name]
    with tempfile.TemporaryDirectory(prefix="dacl-faults-") as work:
        try:
            outcome = case.run(Path(work))
        except Exception as exc:  # noqa: BLE001  (a harness failure is a failed row, not a lost table)
            outcome = Outcome("(harness)", f"{type(exc).__name__}: {exc}", False)
    return {"case": case.name, "expected": case.expected, "fault_command": outcome.command.replace(work, "<tmp>"),
            "observed": outcome.observed.replace(work, "<tmp>"), "passed": outcome.passed}


@measurement("fault_case", {"case": "sigterm_mid_run_then_resume"},
             lambda m: f"{'pass' if m['passed'] else 'FAIL'}: {m['observed']}")
def fault_case(config: dict) -> dict[str, object]:
    """The fault matrix's cell ``config["case"]`` as a measurement (configs/study/reliability_faults.yaml)."""
    return run_case(str(config["case"]))
