"""Turn run directories into paper tables (DomainBed ``collect_results`` style, with selection columns).

Only ``results.json`` files with ``status == "ok"`` count; ``failed.json`` runs are listed separately and
never averaged in. Every row carries the command that reproduces it.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from dacl.engine.results import atomic_write_text

COLUMNS = ["benchmark", "task", "method", "selection", "metric", "mean", "std", "n_seeds", "paper_value", "command"]
SELECTIONS = ("last", "source_val", "oracle")


def load_runs(roots: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(successful results, failed runs) found below ``roots``; unreadable files count as failed."""
    ok, failed = [], []
    for root in roots:
        for path in sorted(Path(root).rglob("results.json")):
            try:
                res = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                failed.append({"run_dir": str(path.parent), "error": f"unreadable results.json: {exc}"})
                continue
            if res.get("status") == "ok":
                res["run_dir"] = str(path.parent)
                ok.append(res)
        for path in sorted(Path(root).rglob("failed.json")):
            if (path.parent / "results.json").exists():
                continue
            try:
                info = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                info = {}
            failed.append({"run_dir": str(path.parent), "error": info.get("error", "unknown"),
                           "command": info.get("command")})
    return ok, failed


def sweep_command(commands: list[str | None], seeds: list[int]) -> str:
    """One multirun command covering all seeds of a row (``seed=0`` -> ``-m ... seed=0,1,2``)."""
    cmd = next((c for c in commands if c), None)
    if cmd is None:
        return ""
    seed_list = ",".join(str(s) for s in sorted(set(seeds)))
    cmd = re.sub(r"\bseed=\S+", f"seed={seed_list}", cmd)
    if len(set(seeds)) > 1 and " -m " not in f" {cmd} ":
        cmd = re.sub(r"^dacl (run|continual) ", r"dacl \1 -m ", cmd, count=1)
    return cmd


def aggregate(results: list[dict[str, Any]], paper_values: dict[str, dict[str, float]] | None = None,
              selections: tuple[str, ...] = SELECTIONS) -> list[dict[str, Any]]:
    """Mean/std over seeds of target accuracy (%) per (benchmark, task, method, selection)."""
    paper_values = paper_values or {}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        label = f"{r['method']} [{r['variant']}]" if r.get("variant") else r["method"]
        groups[(r["benchmark"], r["task"], label)].append(r)
    rows = []
    for (bench, task, method), runs in sorted(groups.items()):
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicate seeds {sorted(seeds)} for {bench}/{method}: collect one run directory per seed")
        for sel in selections:
            vals = [100.0 * r["metrics"]["target_test_acc"][sel] for r in runs if sel in r["metrics"]["target_test_acc"]]
            if not vals:
                continue
            rows.append({
                "benchmark": bench, "task": task, "method": method, "selection": sel, "metric": "target_acc",
                "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "n_seeds": len(vals), "paper_value": paper_values.get(bench, {}).get(runs[0]["method"]),
                "command": sweep_command([r.get("command") for r in runs], seeds),
            })
    return rows


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in COLUMNS})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], failed: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    """A compact wide table (one column per selection protocol) plus the commands and failures."""
    wide: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        w = wide.setdefault((r["task"], r["method"]), {"paper": r["paper_value"], "n": r["n_seeds"], "cmd": r["command"]})
        w[r["selection"]] = f"{r['mean']:.2f} ± {r['std']:.2f}"
    lines = [f"# {title}", "", "Target test accuracy (%), mean ± std over seeds. Selection protocols: `last` = final step; "
             "`source_val` = step with best held-out source accuracy (no target labels); `oracle` = best target test "
             "accuracy (uses target labels: an upper bound, not a result).", "",
             "| task | method | last | source_val | oracle | paper | seeds |", "|---|---|---|---|---|---|---|"]
    for (task, method), w in wide.items():
        lines.append(f"| {task} | {method} | {w.get('last', '')} | {w.get('source_val', '')} | {w.get('oracle', '')} "
                     f"| {_fmt(w['paper'])} | {w['n']} |")
    lines += ["", "## Commands", ""]
    for (task, method), w in wide.items():
        lines.append(f"- {task} {method}: `{w['cmd']}`")
    if failed:
        lines += ["", "## Failed runs (not averaged)", ""]
        lines += [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], failed: list[dict[str, Any]], out_prefix: str | Path, title: str,
                 notes: list[str] | None = None, provenance: dict[str, Any] | None = None) -> None:
    out_prefix = Path(out_prefix)
    md = to_markdown(rows, failed, title, notes or [])
    if provenance:
        md += "\n## Provenance\n\n" + "\n".join(f"- {k}: {v}" for k, v in provenance.items()) + "\n"
    atomic_write_text(out_prefix.with_suffix(".csv"), to_csv(rows))
    atomic_write_text(out_prefix.with_suffix(".md"), md)
