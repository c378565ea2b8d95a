#!/usr/bin/env python
"""Validator study table: how well each label-free validator ranks checkpoints and selects models.

    python scripts/validator_study.py runs/validator_study --out paper_results/digits/validator_study

Reads every successful run below the roots (their eval histories must hold ``score/<validator>``; launch the
sweep with ``trainer.validators=[source_val,entropy,im,bnm,snd,dev]``), one table per benchmark:
Spearman correlation of score vs target accuracy (pooled over all checkpoints; mean within a run), and the
target accuracy each validator selects per method over all checkpoints of all hyper-parameter trials, against
the oracle (which reads target labels and is only the ceiling). The runs behind each table are written to
<out>_<benchmark>.runs.jsonl, which can be passed back as a root to re-make the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import shlex
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.analysis.validator_study import study  # noqa: E402
from dacl.reporting import COLUMNS, archive_runs, atomic_write_text, commit_label, load_runs, sweep_command  # noqa: E402


def _f(v: float, scale: float = 1.0) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{scale * v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--out", required=True, help="output prefix; _<benchmark>.md/.csv are appended")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    try:
        ok, failed = load_runs(args.roots)
    except FileNotFoundError as exc:
        sys.exit(f"validator_study: {exc}")
    ok = [r for r in ok if r.get("history")]
    if not ok:
        sys.exit(f"validator_study: no finished runs with eval histories under {args.roots}")
    by_bench = defaultdict(list)
    for r in ok:
        by_bench[r["benchmark"]].append(r)
    for bench, runs in sorted(by_bench.items()):
        s = study(runs)
        methods = s["methods"]
        trials = defaultdict(set)
        for r in runs:
            trials[r["method"]].add(r.get("hparams_seed", 0))
        task = runs[0]["task"]
        cmd = sweep_command([runs[0].get("command")], [r["seed"] for r in runs],
                            {"method": [r["method"] for r in runs], "hparams_seed": [r.get("hparams_seed", 0) for r in runs]})
        lines = [f"# Validator study: {task}", "",
                 f"{s['n_runs']} runs ({', '.join(f'{m} x{len(trials[m])} trials' for m in methods)}), "
                 f"{s['n_checkpoints']} evaluated checkpoints. Spearman: rank correlation between the validator's "
                 "score and target test accuracy, pooled over every checkpoint of every run, and averaged within "
                 "runs. Selected: target accuracy (%) of the checkpoint the validator scores best among all "
                 "checkpoints of all trials of a method (DomainBed-style selection); the oracle reads target labels "
                 "and is the ceiling, not a protocol.", "",
                 "| validator | Spearman (pooled) | Spearman (within run) | " + " | ".join(methods) + " | mean | gap to oracle |",
                 "|---|---|---|" + "---|" * (len(methods) + 2)]
        rows = []
        for v, d in s["validators"].items():
            lines.append(f"| {v} | {_f(d['spearman_pooled'])} | {_f(d['spearman_within_run'])} | "
                         + " | ".join(_f(d["selected_acc"][m], 100) for m in methods)
                         + f" | {_f(d['mean_selected_acc'], 100)} | {_f(d['gap_to_oracle'], 100)} |")
            base = {"benchmark": bench, "task": task, "selection": v, "std": "", "n_seeds": len(runs), "paper_value": "",
                    "command": cmd}
            rows.append({**base, "method": "all", "metric": "spearman_pooled", "mean": _f(d["spearman_pooled"])})
            rows.append({**base, "method": "all", "metric": "spearman_within_run", "mean": _f(d["spearman_within_run"])})
            rows += [{**base, "method": m, "metric": "target_acc_selected", "mean": _f(d["selected_acc"][m], 100)}
                     for m in methods]
        lines += ["", "## Command", "", f"- sweep: `{cmd}`" if cmd else "- (no command recorded)",
                  f"- table: `python scripts/validator_study.py {shlex.join(sys.argv[1:])}`"]
        commits = sorted({commit_label(r) for r in runs})
        lines += [f"- code: {', '.join(commits)}; failed runs under the roots: {len(failed)}"]
        if args.note:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in args.note]
        out = Path(f"{args.out}_{bench}")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
        atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
        archive_runs(runs, [f for f in failed if f.get("benchmark") in (bench, None)], out.with_suffix(".runs.jsonl"))
        print("\n".join(lines))


if __name__ == "__main__":
    main()
