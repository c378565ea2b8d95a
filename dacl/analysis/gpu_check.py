"""A short battery for the first GPU a session gets (scripts/gpu_check.sh): one table, every check through the real
``dacl run`` path in temporary folders.

- amp_bf16 / fp32: the digits DANN step under bf16 autocast and without, channels-last and not (images/s, finite);
- dann_digits: that step's images/s next to the committed CPU figure (paper_results/throughput/cpu.csv, the table
  ``dacl reproduce throughput_cpu`` makes; a missing or unreadable table is a row saying so, not a crash);
- ddp_nccl_syncbn: with two or more GPUs, a 2-process torchrun DANN run (NCCL, BatchNorm -> SyncBatchNorm);
- office31_recipe: TLlib's Office-31 DANN recipe (ResNet-50, no pretrained weights) for 200 steps on a synthetic
  Office-31 tree, streamed at 224 px.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]


CPU_TABLE = REPO / "paper_results" / "throughput" / "cpu.csv"


def _run(overrides: list[str], folder: Path) -> dict[str, Any]:
    """One run through ``dacl run``'s own composition (DACL_CONFIG_DIR and installed packages' configs included)."""
    from dacl.engine.shared_runs import compose_run_config
    from dacl.experiment import run_experiment

    cfg = compose_run_config(overrides)
    t0 = time.perf_counter()
    res = run_experiment(cfg, folder)
    res["_wall"] = time.perf_counter() - t0
    return res


def _row(check: str, res: dict[str, Any] | None, note: str = "") -> dict[str, Any]:
    if res is None:
        return {"check": check, "ok": False, "images_per_second": None, "peak_memory_mb": None, "note": note}
    ok = res.get("status") == "ok"
    return {"check": check, "ok": ok, "images_per_second": res.get("train_images_per_second"),
            "peak_memory_mb": (res.get("peak_memory_mb") or {}).get("cuda_max_allocated"), "note": note}


def run_checks(device: str, steps: int, recipe_steps: int, per_class: int = 12) -> list[dict[str, Any]]:
    rows = []
    digits = ["method=dann", "benchmark=digits_offline", f"trainer.max_steps={steps}", "trainer.batch_size=128",
              f"trainer.eval_every={steps}", "trainer.progress=false", f"trainer.device={device}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for amp in ("bf16", "off"):
            for cl in ("true", "false"):
                try:
                    res = _run([*digits, f"trainer.amp={amp}", f"trainer.channels_last={cl}"], tmp / f"{amp}_{cl}")
                    rows.append(_row(f"dann_digits amp={amp} channels_last={cl}", res))
                except Exception as exc:  # noqa: BLE001  (a check that fails is a row, not the end of the battery)
                    rows.append(_row(f"dann_digits amp={amp} channels_last={cl}", None, f"{type(exc).__name__}: {exc}"))
        rows.append(committed_cpu_row(CPU_TABLE))
        if device.startswith("cuda") and torch.cuda.device_count() >= 2:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "dacl", "run", *digits,
                   f"hydra.run.dir={tmp / 'ddp'}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            res = json.loads((tmp / "ddp" / "results.json").read_text()) if proc.returncode == 0 else None
            rows.append(_row("ddp_nccl_syncbn 2 processes", res, "" if res else proc.stderr.strip().splitlines()[-1:]))
        else:
            rows.append(_row("ddp_nccl_syncbn 2 processes", None, "skipped: fewer than 2 GPUs"))
        from dacl.data.synth import write_synthetic

        write_synthetic("office31", tmp / "data", 31 * 3 * per_class, workers=2)
        try:
            res = _run(["+experiment=office31_tllib", "model.pretrained=false", f"trainer.max_steps={recipe_steps}",
                        f"trainer.eval_every={recipe_steps}", "trainer.progress=false", f"trainer.device={device}",
                        "benchmark.storage=stream", "benchmark.workers=4", f"data_root={tmp / 'data'}"], tmp / "o31")
            rows.append(_row(f"office31_recipe resnet50 {recipe_steps} steps (streamed, 224 px)", res))
        except Exception as exc:  # noqa: BLE001
            rows.append(_row("office31_recipe", None, f"{type(exc).__name__}: {exc}"))
    return rows


def committed_cpu_row(path: Path) -> dict[str, Any]:
    """The committed CPU images/s of DANN on MNIST->USPS, for comparison: informational, so never a failed check."""
    check = "dann_digits committed CPU figure (MNIST->USPS, LeNet, 128 + 128)"
    try:
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("method") == "dann" and r.get("metric") == "images_per_second"]
        value = float(rows[0]["mean"]) if rows else None
        note = str(path.relative_to(REPO)) if value is not None else f"skipped: no dann row in {path.name}"
    except (OSError, ValueError, KeyError) as exc:
        value, note = None, f"skipped: {path.name} unreadable ({type(exc).__name__})"
    return {"check": check, "ok": True, "images_per_second": value, "peak_memory_mb": None, "note": note}


def table(rows: list[dict[str, Any]], device: str) -> str:
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    out = [f"GPU check on {name} (torch {torch.__version__})", "",
           "| check | ok | images/s | peak CUDA MB | note |", "|---|---|---|---|---|"]
    for r in rows:
        ips = f"{r['images_per_second']:.0f}" if r["images_per_second"] else ""
        ok = "skipped" if str(r["note"]).startswith("skipped") else "yes" if r["ok"] else "NO"
        out.append(f"| {r['check']} | {ok} | {ips} | {r['peak_memory_mb'] or ''} | {r['note']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--recipe-steps", type=int, default=200)
    ap.add_argument("--per-class", type=int, default=12, help="synthetic Office-31 images per class and domain")
    ns = ap.parse_args(argv)
    if ns.device.startswith("cuda") and not torch.cuda.is_available():
        print("dacl: error: no CUDA device visible; run on the GPU machine (or --device cpu to try the battery)")
        return 2
    rows = run_checks(ns.device, ns.steps, ns.recipe_steps, ns.per_class)
    print(table(rows, ns.device))
    return 0 if all(r["ok"] for r in rows if "skipped" not in str(r["note"])) else 1


if __name__ == "__main__":
    sys.exit(main())
