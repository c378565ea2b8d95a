#!/usr/bin/env python
"""Collect run directories into a paper table (Markdown + CSV).

    python scripts/collect.py runs/mnist_usps --out paper_results/digits/mnist_usps \
        --title "MNIST -> USPS (LeNet)" --paper-values scripts/paper_values/digits.json

Only successful runs (results.json, status ok) are averaged; failed runs are listed, never averaged.
Every run record behind the table is also written to <out>.runs.jsonl: commit it with the table, so the
table can be re-collected (pass that file as a root) after the run folders are gone.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.reporting import aggregate, archive_runs, commit_label, load_runs, processes, write_tables  # noqa: E402


def tagged_notes(path: Path, tag: str) -> list[str]:
    """The '- [tag] text' bullets of a notes file, text only: notes live in a file, not in a long command line."""
    if not path.is_file():
        sys.exit(f"collect: no notes file '{path}'; check --notes-file")
    prefix = f"- [{tag}] "
    return [line[len(prefix):].strip() for line in path.read_text().splitlines() if line.startswith(prefix)]


def select_variants(runs: list[dict], keep: str | None, drop: str | None) -> list[dict]:
    """The runs whose variant is in ``keep`` (comma-separated, 'none' = no variant; None keeps all) and not in ``drop``."""
    def name(r: dict) -> str:
        return r.get("variant") or "none"
    kept = [r for r in runs if keep is None or name(r) in keep.split(",")]
    return [r for r in kept if drop is None or name(r) not in drop.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", help="run folders to search for results.json / failed.json, or a table's "
                    "committed <table>.runs.jsonl (re-collect it, or extend it with new run folders)")
    ap.add_argument("--out", required=True, help="output path without extension (.md and .csv are written)")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--paper-values", default=None, help="JSON {benchmark: {method: value, ...}, '_notes': [...]}")
    ap.add_argument("--note", action="append", default=[], help="extra note lines for the table")
    ap.add_argument("--notes-file", default=None, help="analysis notes kept beside the scripts: one '- [tag] text' bullet "
                    "per line; the bullets whose tag is --notes-tag enter the table (after the --note lines)")
    ap.add_argument("--notes-tag", default=None, help="which bullets of --notes-file to use (default: the name of --out)")
    ap.add_argument("--variants", default=None, help="keep only runs of these variants (comma-separated; 'none' = runs "
                    "with no variant), e.g. a pre-declared variant's own table from a root it shares with the main one")
    ap.add_argument("--drop-variants", default=None, help="leave out runs of these variants (comma-separated), e.g. "
                    "the variants that have tables of their own")
    args = ap.parse_args()

    paper, notes = {}, list(args.note)
    if args.notes_file:
        notes += tagged_notes(Path(args.notes_file), args.notes_tag or Path(args.out).name)
    if args.paper_values:
        raw = json.loads(Path(args.paper_values).read_text())
        notes += raw.pop("_notes", [])
        paper = raw
    try:
        ok, failed = load_runs(args.roots)
    except FileNotFoundError as exc:
        sys.exit(f"collect: {exc}")
    if not ok and not failed:
        sys.exit(f"collect: no results.json or failed.json under {args.roots}; run the experiments first")
    if args.variants or args.drop_variants:
        ok, failed = select_variants(ok, args.variants, args.drop_variants), select_variants(failed, args.variants,
                                                                                            args.drop_variants)
        if not ok and not failed:
            sys.exit(f"collect: no run under {args.roots} has a variant in --variants {args.variants!r} "
                     f"(and outside --drop-variants {args.drop_variants!r}); check the names (the `variant:` of the "
                     "experiment config)")
    rows = aggregate(ok, paper, failed=failed)
    commits = sorted({commit_label(r) for r in ok})
    hardware = sorted({f"{r['hardware'].get('device')} / {r['hardware'].get('gpu') or r['hardware'].get('cpu')}" for r in ok})
    ips = {}
    for r in ok:
        procs = processes(r)
        ips.setdefault(r["method"] + (f" ({procs} processes)" if procs > 1 else ""), []).append(r["train_images_per_second"])
    provenance = {
        "commits": ", ".join(commits), "hardware": "; ".join(hardware), "runs": len(ok), "failed runs": len(failed),
        "training throughput (img/s, mean over runs)": ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in sorted(ips.items())),
        "collected with": "`python scripts/collect.py " + shlex.join(sys.argv[1:]) + "`",
    }
    write_tables(rows, failed, args.out, args.title, notes, provenance)
    archive_runs(ok, failed, Path(args.out).with_suffix(".runs.jsonl"))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
