#!/usr/bin/env python
"""Fine-tuning baselines on digits: backbones dacl pre-trains on MNIST, adapted to USPS / MNIST-M.

    python scripts/reproduce_finetune.py --data-root ../shared/data                    # table + curve
    python scripts/reproduce_finetune.py --data-root ../shared/data --tasks mnistm --parts table --out paper_results/finetune/mnistm
(the USPS table's runs predate run archives, so MNIST-M's rows are a table of their own: adding them to digits.md
would re-run every USPS job)

1. Pre-train each backbone on MNIST (source_only, 0 target labels; runs/finetune/pretrain/<task>_<backbone>).
2. Table (paper_results/finetune/digits.{md,csv}): every baseline x backbone on all target labels, per seed:
   accuracy at the last step and at the best step on the target's *labelled* held-out validation split
   (legitimate for supervised fine-tuning), trainable parameters, peak memory, time per step.
3. Curve (paper_results/finetune/label_efficiency.{csv,png}): target accuracy vs number of labelled target
   examples for from-scratch, linear probe, full fine-tuning and LoRA (CNN backbone, last step).
Hyper-parameters are fixed below, before any result was seen; target test labels never choose anything.
Every job is a `dacl run -m ...` subprocess (its command is printed beside its row); finished seeds are reused,
from run folders or from the committed paper_results/finetune/digits.runs.jsonl (run folders are not versioned),
so a fresh clone re-runs only what is missing (and pre-trains only if something must run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.engine.results import atomic_write_json, atomic_write_text, git_commit  # noqa: E402
from dacl.engine.weights import WEIGHTS_FILE  # noqa: E402
from dacl.reporting import (COLUMNS, PEFT_MAX_POINTS_BELOW_FULL, PEFT_MAX_TRAINABLE_PERCENT,  # noqa: E402
                            format_mean_std, mean_std, peft_shape_misses, to_csv)

# Declared before running: AdamW + 50-step warm-up + cosine, batch 64; one LR per kind of update.
COMMON = ["trainer.optimizer=adamw", "trainer.weight_decay=0.01", "trainer.schedule=cosine",
          "+trainer.schedule_kwargs.warmup_steps=50", "trainer.progress=false"]
LR = {"scratch": 1e-3, "full_finetune": 3e-4, "linear_probe": 3e-3, "lora": 3e-3, "adapters": 3e-3, "prefix": 3e-3,
      "bitfit": 3e-3, "ia3": 3e-3}
METHOD_ARGS = {"scratch": ["method=source_only"], "prefix": ["method=prefix", "method.num_virtual_tokens=8"]}
TASKS = {  # target benchmark, MNIST pre-training benchmark, model overrides per backbone
    "usps": {"bench": "usps_usps", "pretrain": "mnist_usps", "cnn": ["model=lenet"], "vit": ["model=vit_micro"]},
    # MNIST-M's CNN is the same LeNet at MNIST-M's native 28x28, in RGB: cnn32 costs ~2 s per CPU step (~10 h
    # for the CNN rows), LeNet ~40 ms; switched before any MNIST-M fine-tuning run existed
    "mnistm": {"bench": "mnistm_mnistm", "pretrain": "mnist_mnistm", "cnn": ["model=lenet", "benchmark.image_size=28"],
               "vit": ["model=vit_micro", "model.patch_size=8"]},
}
METHODS = {"cnn": ["scratch", "linear_probe", "full_finetune", "lora", "bitfit", "ia3"],
           "vit": ["scratch", "linear_probe", "full_finetune", "lora", "adapters", "prefix", "bitfit", "ia3"]}
CURVE_METHODS = ["scratch", "linear_probe", "full_finetune", "lora"]
TRAINED_AT: set[str] = set()  # commits the runs behind the tables were trained at (reused jobs keep theirs)
PRETRAINED: set[str] = set()  # sha256 prefixes of the pre-trained checkpoints the fine-tuning results started from
RUN_MISSING = True  # False (--collect-only): tables and archive from finished runs only, nothing is trained
RUNTIME = ("data_root=", "trainer.threads=", "hydra.")  # never change a result: ignored when reusing a job


def rel(path: Path) -> str:
    """Paths in commands relative to the repository (jobs run there), so printed commands work in any clone."""
    return os.path.relpath(path, REPO)


ARCHIVE: dict[tuple[str, int], dict] = {}  # (job folder, seed) -> run record, read from a table's committed .runs.jsonl
USED: dict[tuple[str, int], dict] = {}  # the records behind this invocation's tables, written back to that file


def load_archive(path: Path) -> None:
    """Run records committed beside a table count as finished jobs: run folders are not versioned."""
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                ARCHIVE[rec["job"], rec["seed"]] = rec


def save_archive(path: Path) -> None:
    merged = {**ARCHIVE, **USED}  # keeps archived jobs this invocation did not touch (e.g. other --methods)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for _, r in sorted(merged.items())))


def job_key(args: list[str]) -> list[str]:
    """The result-changing arguments of a job; a pre-trained checkpoint is named by its run folder, so a job that
    started from <run>/model.pt (runs before weights moved to safetensors) is the same as one from
    <run>/model.safetensors: the same weights (their digest is recorded with each result)."""
    out = []
    for a in args:
        if a.startswith(RUNTIME):
            continue
        key, _, value = a.partition("=")
        if key.endswith("checkpoint") and value.endswith(("/model.pt", "/model.safetensors")):
            a = f"{key}={value.rsplit('/', 1)[0]}"
        out.append(a)
    return out


def checkpoint_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else None


def pretrained_checkpoint(a: argparse.Namespace, task: str, backbone: str) -> Path:
    return a.runs / "pretrain" / f"{task}_{backbone}" / "seed0" / WEIGHTS_FILE


def dacl_job(args: list[str], out_dir: Path, seeds: list[int], log: Path,
             checkpoint: tuple[Path, Callable[[], None]] | None = None) -> tuple[str, list[dict]]:
    """Run one `dacl run -m` over the seeds that have no result yet for the same arguments.

    A seed counts as finished when its run folder holds results for the same result-changing arguments, or the
    archive (``load_archive``) records it. ``checkpoint`` = (pre-trained file the job starts from, a function that
    makes it): made only when a seed must actually run, and its digest is recorded with each result.
    """
    key = job_key(args)
    job = rel(out_dir)

    def finished(seed: int) -> dict | None:
        run = out_dir / f"seed{seed}"
        marker = run / "job.json"
        if marker.is_file() and job_key(json.loads(marker.read_text()).get("key") or []) == key and (run / "results.json").is_file():
            res = json.loads((run / "results.json").read_text())
            pretrained = json.loads(marker.read_text()).get("pretrained")  # digest recorded when the seed ran
            return {**res, "pretrained": pretrained} if pretrained else res
        rec = ARCHIVE.get((job, seed))
        return rec if rec is not None and job_key(rec.get("job_key") or []) == key else None

    def argv(run_seeds: list[int]) -> list[str]:
        return [str(REPO / ".venv" / "bin" / "dacl"), "run", "-m", *args, "seed=" + ",".join(map(str, run_seeds)),
                f"hydra.sweep.dir={job}", "hydra.sweep.subdir=seed${seed}"]

    command = "dacl run -m " + shlex.join(argv(seeds)[3:])
    missing = [s for s in seeds if finished(s) is None]
    if missing and not RUN_MISSING:
        print(f"not run (--collect-only): {job} seed(s) {missing}", flush=True)
    elif missing:
        if checkpoint:
            checkpoint[1]()
        pretrained = checkpoint_digest(checkpoint[0]) if checkpoint else None
        print(f"$ dacl run -m {shlex.join(argv(missing)[3:])}", flush=True)
        with open(log, "a") as fh:
            subprocess.run(argv(missing), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False)
        for s in missing:
            if (out_dir / f"seed{s}" / "results.json").is_file():
                atomic_write_json(out_dir / f"seed{s}" / "job.json", {"key": key, "command": command,
                                                                     "pretrained": pretrained})
    results = []
    for s in seeds:
        res = finished(s) or {"status": "failed", "seed": s}
        if res.get("status") == "ok":
            USED[job, s] = {**res, "job": job, "job_key": key, "seed": s}
        results.append(res)
    TRAINED_AT.update(f"{r['commit'][:12]}{' (dirty)' if r.get('dirty') else ''}" for r in results if r.get("commit"))
    PRETRAINED.update(r["pretrained"] for r in results if r.get("pretrained"))
    return command, results


def pretrain(task: str, backbone: str, a: argparse.Namespace, log: Path) -> Path:
    spec = TASKS[task]
    ckpt = pretrained_checkpoint(a, task, backbone)
    out = ckpt.parent.parent
    args = [f"benchmark={spec['pretrain']}", *spec[backbone], "method=source_only", f"trainer.max_steps={a.pretrain_steps}",
            "trainer.lr=1e-3", "trainer.eval_every=500", "trainer.batch_size=64", *COMMON, f"data_root={a.data_root}", f"trainer.threads={a.threads}"]
    if not ckpt.is_file():
        ARCHIVE.pop((rel(out), 0), None)  # an archived record is no use without the file: pre-train again
    _, res = dacl_job(args, out, [0], log)
    if res[0].get("status") != "ok" or not ckpt.is_file():
        sys.exit(f"pre-training {task}/{backbone} failed: see {out}/seed0/failed.json and {log}")
    return ckpt


def finetune(task: str, backbone: str, method: str, n: int | None, steps: int, a: argparse.Namespace,
             log: Path) -> tuple[str, list[dict]]:
    spec = TASKS[task]
    ckpt = pretrained_checkpoint(a, task, backbone)  # made on demand by pretrain()
    args = [f"benchmark={spec['bench']}", *spec[backbone], *METHOD_ARGS.get(method, [f"method={method}"]),
            f"trainer.max_steps={steps}", f"trainer.lr={LR[method]}", f"trainer.eval_every={max(50, steps // 4)}", *COMMON]
    if method != "scratch":
        args.append(f"method.checkpoint={rel(ckpt)}")
    if n is not None:
        args.append(f"benchmark.max_source_train={n}")
    args.append(f"trainer.batch_size={min(64, n or 64)}")
    args += [f"data_root={a.data_root}", f"trainer.threads={a.threads}"]
    out = a.runs / task / backbone / method / (f"n{n}" if n is not None else "all")
    made = None if method == "scratch" else (ckpt, lambda: pretrain(task, backbone, a, log))
    return dacl_job(args, out, a.seeds, log, made)


def summary(results: list[dict], selection: str, key: str = "target_test_acc") -> tuple[float, float | None, int]:
    """Mean, std (%; None for one seed) and count over the finished seeds of `key` at the step `selection` chose."""
    vals = [100 * r["selection"][selection][key] for r in results if r.get("status") == "ok"]
    return (*mean_std(vals), len(vals))


def cost_columns(results: list[dict]) -> dict:
    """Failures, parameter counts, time per step and peak memory of one job's seeds (the table's extra columns)."""
    ok = [r for r in results if r.get("status") == "ok"]
    params = ok[0].get("params", {}).get("model", {}) if ok else {}
    mem = ok[0].get("peak_memory_mb", {}) if ok else {}
    return {"n_failed": len(results) - len(ok), "trainable_params": params.get("trainable"),
            "total_params": params.get("total"),
            "trainable_percent": 100 * params["trainable"] / params["total"] if params else None,
            "time_per_step_ms": statistics.fmean(r["time_per_step_ms"] for r in ok) if ok else None,
            "peak_memory_mb": mem.get("cuda_max_allocated", mem.get("host_peak_rss")),
            "device": ok[0].get("hardware", {}).get("device") if ok else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--tasks", default="usps")
    ap.add_argument("--curve-tasks", default="usps", help="tasks of the label-efficiency curve (a subset of --tasks)")
    ap.add_argument("--backbones", default="cnn,vit")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000, help="CNN fine-tuning steps on all labels")
    ap.add_argument("--vit-steps", type=int, default=400, help="ViT fine-tuning steps (~10x the CNN's cost per step)")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--curve-sizes", default="10,20,50,100,500,all")
    ap.add_argument("--curve-steps", type=int, default=500)
    ap.add_argument("--parts", default="table,curve")
    ap.add_argument("--methods", default=None, help="only these baselines (comma-separated; default: all), e.g. to "
                    "split one task's jobs over two processes; the table then holds only them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", action="append", default=[], help="a line for the table's Notes (repeatable): findings, "
                    "each with the numbers it rests on")
    ap.add_argument("--runs", default=str(REPO / "runs" / "finetune"))
    ap.add_argument("--out", default=str(REPO / "paper_results" / "finetune"))
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: write the tables and archive from finished runs (missing seeds are listed)")
    a = ap.parse_args()
    global RUN_MISSING
    RUN_MISSING = not a.collect_only
    a.seeds, a.runs, out = [int(s) for s in a.seeds.split(",")], Path(a.runs), Path(a.out)
    tasks, backbones, parts = a.tasks.split(","), a.backbones.split(","), a.parts.split(",")
    wanted = a.methods.split(",") if a.methods else None
    unknown = [t for t in tasks if t not in TASKS] + [b for b in backbones if b not in METHODS] + \
        [m for m in wanted or [] if m not in LR]
    if unknown:
        sys.exit(f"unknown task/backbone/method {unknown}; tasks: {list(TASKS)}, backbones: {list(METHODS)}, "
                 f"methods: {list(LR)}")
    a.runs.mkdir(parents=True, exist_ok=True)
    log = a.runs / "jobs.log"
    script = "python scripts/reproduce_finetune.py " + shlex.join(sys.argv[1:])
    started, provenance = time.time(), git_commit()

    archive = out / "digits.runs.jsonl"  # records of every job (pre-training, table, curve) behind both outputs
    load_archive(archive)
    rows: list[dict] = []
    if "table" in parts:
        for t in tasks:
            for b in backbones:
                for m in (m for m in METHODS[b] if wanted is None or m in wanted):
                    command, res = finetune(t, b, m, None, a.vit_steps if b == "vit" else a.steps, a, log)
                    for sel, shown in (("last", "last"), ("source_val", "target_val")):  # in-domain: the
                        mean, std, n = summary(res, sel)  # "source" validation split is the target's own labelled one
                        rows.append({"benchmark": f"mnist->{t}", "task": f"mnist->{t}", "method": f"{m} [{b}]",
                                     "selection": shown, "metric": "target_acc", "mean": mean, "std": std, "n_seeds": n,
                                     "paper_value": None, "command": command, **cost_columns(res)})
        write_table(rows, out / "digits", a, script, provenance)
    if "curve" in parts:
        curve = []
        sizes = [None if s == "all" else int(s) for s in a.curve_sizes.split(",")]
        for t in (t for t in tasks if t in a.curve_tasks.split(",")):
            for m in (m for m in CURVE_METHODS if wanted is None or m in wanted):
                for n in sizes:
                    command, res = finetune(t, "cnn", m, n, a.curve_steps if n else a.steps, a, log)
                    mean, std, k = summary(res, "last")
                    size = n or (res[0].get("data_sizes", {}).get("source_train") if res[0].get("status") == "ok" else None)
                    curve.append({"task": f"mnist->{t}", "method": m, "n_labels": size, "all": n is None, "mean": mean,
                                  "std": std, "n_seeds": k, "command": command})
        write_curve(curve, out / "label_efficiency", script, provenance)
    save_archive(archive)
    print(f"done in {time.time() - started:.0f} s")


def _f(v, digits: int = 2) -> str:
    return "" if v is None or v != v else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def shape_against_full_finetune(by_key: dict) -> list[str]:
    """The LoRA paper's question asked of each task and backbone, computed from the table: is each
    parameter-efficient update within a few points of full fine-tuning of the same backbone (`target_val`
    selection) while training a small share of it? `scratch` and rows without a full fine-tuning partner are left out."""
    lines = []
    for (task, label, sel), r in by_key.items():
        method, _, backbone = label.partition(" ")
        full = by_key.get((task, f"full_finetune {backbone}", sel))
        if sel != "target_val" or method in ("scratch", "full_finetune") or full is None or r["n_seeds"] == 0:
            continue
        gap = r["mean"] - full["mean"]
        misses = peft_shape_misses({"accuracy": gap}, r["trainable_percent"])
        lines.append(f"- {task} {label}: {gap:+.2f} points against full FT's {format_mean_std(full['mean'], full['std'])}, "
                     f"{_f(r['trainable_percent'], 3)}% trained: " + (f"misses on {', '.join(misses)}" if misses else "meets it"))
    if not lines:
        return []
    return ["## Against full fine-tuning", "",
            "Computed from the table above (`target_val` column): each update's accuracy minus full fine-tuning's on the "
            f"same backbone, and whether it meets the LoRA paper's shape (within {PEFT_MAX_POINTS_BELOW_FULL:g} points "
            f"of full FT, with under {PEFT_MAX_TRAINABLE_PERCENT:g}% of the parameters trained).", "", *lines, ""]


def write_table(rows: list[dict], out: Path, a: argparse.Namespace, script: str, provenance: dict) -> None:
    extra = ["trainable_params", "total_params", "trainable_percent", "time_per_step_ms", "peak_memory_mb", "device"]
    atomic_write_text(out.with_suffix(".csv"), to_csv(rows, COLUMNS + extra))
    md = ["# Fine-tuning baselines: MNIST-pretrained backbones adapted with all target labels", "",
          "Target test accuracy (%), mean ± std over seeds (a cell with one seed shows its value alone). `last` = final step; `target_val` = step with the best "
          "accuracy on a labelled 10% split of the target's training set (never the test set).", "",
          "| task | method [backbone] | last | target_val | trainable | % of total | time/step (ms) | peak memory (MB) | seeds | failed |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["task"], r["method"], r["selection"]): r for r in rows}
    for (task, method, sel), r in by_key.items():
        if sel != "last":
            continue
        v = by_key[(task, method, "target_val")]
        md.append(f"| {task} | {method} | {format_mean_std(r['mean'], r['std'])} | {format_mean_std(v['mean'], v['std'])} | "
                  f"{_f(r['trainable_params'])} | {_f(r['trainable_percent'], 3)} | {_f(r['time_per_step_ms'], 1)} | "
                  f"{_f(r['peak_memory_mb'], 0)} | {r['n_seeds']} | {r['n_failed'] or ''} |")
    md += ["", *shape_against_full_finetune(by_key), "## Protocol", "",
           f"- Pre-training: `source_only` on MNIST ({a.pretrain_steps} steps, AdamW lr 1e-3); target labels never seen. "
           f"Fine-tuning: {a.steps} steps (CNN) / {a.vit_steps} (ViT), batch 64, AdamW (wd 0.01), 50-step warm-up + cosine; learning rate by kind "
           "of update, fixed before any run: " + ", ".join(f"{k} {v:g}" for k, v in LR.items()) + ".",
           "- `scratch` = the same architecture randomly initialised and trained on the target labels only. "
           "`prefix [vit]` = deep visual prompts (8 tokens per block); `lora` = peft LoRA rank 8 (ViT `qkv`; every Linear "
           "of the CNN); `adapters` = Houlsby adapters (bottleneck 64) + LayerNorms; `bitfit` = bias terms only; `ia3` = peft (IA)^3 "
           "rescaling vectors (ViT: qkv output, fc2 input; CNN: every Linear's output). Trainable counts include the head.",
           "- Time per step and peak memory are from the machine in the `device` column (CPU: peak resident set size of "
           "the process, which includes the Python/torch runtime; GPU: CUDA allocator peak). The linear probe's time per step "
           "excludes its one pass that caches the frozen features.",
           "- Backbones per task (model overrides): " + "; ".join(
               f"{t}: " + ", ".join(f"{b} `{' '.join(TASKS[t][b])}`" for b in METHODS) for t in a.tasks.split(",")) + ".",
           "- Reference shape (LoRA paper, RoBERTa-base GLUE average): full FT 86.4 @125M, LoRA 87.2 @0.3M, "
           "AdapterD 85.4 @0.9M, BitFit 85.2 @0.1M — parameter-efficient updates within ~1-2 points of full FT."]
    if a.note:
        md += ["", "## Notes", ""] + [f"- {n}" for n in a.note]
    md += ["", "## Commands", "", f"- table: `{script}`"]
    md += [f"- {r['method']} ({r['task']}): `{r['command']}`" for r in rows if r["selection"] == "last"]
    md += ["", f"Runs trained at commit(s): {', '.join(sorted(TRAINED_AT))}; pre-trained checkpoint(s) "
           f"(sha256): {', '.join(sorted(PRETRAINED)) or 'not recorded'}; table written at "
           f"{provenance.get('commit')} (dirty: {provenance.get('dirty')}). Run records: digits.runs.jsonl", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    print("\n".join(md[:md.index("## Protocol")]))


def write_curve(curve: list[dict], out: Path, script: str, provenance: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_text(out.with_suffix(".csv"), to_csv(curve, ["task", "method", "n_labels", "mean", "std", "n_seeds", "command"]))
    fig, axes = plt.subplots(1, len({r["task"] for r in curve}), figsize=(6, 4), squeeze=False)
    for ax, task in zip(axes[0], dict.fromkeys(r["task"] for r in curve)):
        for m in CURVE_METHODS:
            pts = [r for r in curve if r["task"] == task and r["method"] == m and r["n_seeds"] and r["n_labels"]]
            ax.errorbar([r["n_labels"] for r in pts], [r["mean"] for r in pts], yerr=[r["std"] or 0.0 for r in pts],  # one seed: no bar
                        marker="o", capsize=3, label=m)
        ax.set(xscale="log", xlabel="labelled target examples", ylabel="target test accuracy (%) [last step]",
               title=f"{task} (CNN pre-trained on MNIST)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.text(0.01, 0.005, f"{script} @ {str(provenance.get('commit'))[:10]}; runs trained at {', '.join(sorted(TRAINED_AT))}",
             fontsize=6)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(out.with_suffix(".png"))


if __name__ == "__main__":
    main()
