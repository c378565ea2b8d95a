"""Renderers of the fine-tuning tables: accuracy beside what each update costs (trainable parameters, time per step,
peak memory), and whether each parameter-efficient update keeps the LoRA paper's shape against full fine-tuning."""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from dacl.reporting import (COLUMNS, PEFT_MAX_POINTS_BELOW_FULL, PEFT_MAX_TRAINABLE_PERCENT, _fmt, format_mean_std,
                            mean_std, peft_shape_misses, sweep_command)
from dacl.studies.spec import Study
from dacl.studies.tables import Rendered, _tail, renderer

COST_COLUMNS = ["trainable_params", "total_params", "trainable_percent", "time_per_step_ms", "peak_memory_mb", "device"]


def costs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Parameter counts, mean time per step and peak memory of one cell's runs."""
    params = runs[0].get("params", {}).get("model", {})
    memory = runs[0].get("peak_memory_mb", {})
    return {"trainable_params": params.get("trainable"), "total_params": params.get("total"),
            "trainable_percent": 100 * params["trainable"] / params["total"] if params else None,
            "time_per_step_ms": statistics.fmean(r["time_per_step_ms"] for r in runs),
            "peak_memory_mb": memory.get("cuda_max_allocated", memory.get("host_peak_rss")),
            "device": runs[0].get("hardware", {}).get("device")}


def accuracy(runs: list[dict[str, Any]], selection: str, key: str) -> tuple[float, float | None]:
    return mean_std([100 * r["selection"][selection][key] for r in runs])


@renderer("finetune_text")
def finetune_text(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                  provenance: list[str]) -> tuple[str, Rendered]:
    """One row per method; for each (training domain, other domain) pair the in-domain accuracy (the training
    domain's test split) and the cross-domain one (the other domain's, never seen), at the source_val step."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        cells[(r["method"], r["task"])].append(r)
    methods = list(dict.fromkeys(r["method"] for r in ok))
    pairs = list(dict.fromkeys(r["task"] for r in ok))
    seeds = max((len(v) for v in cells.values()), default=0)
    rows, value = [], {}
    for m in methods:
        for pair in pairs:
            runs = cells.get((m, pair), [])
            if not runs:
                continue
            source = pair.split("->")[0]
            command = sweep_command([r.get("command") for r in runs], [r["seed"] for r in runs])
            for selection in ("last", "source_val"):
                for task, key in ((f"{source} (in-domain)", "source_test_acc"), (pair, "target_test_acc")):
                    mean, std = accuracy(runs, selection, key)
                    value[(m, task, selection)] = (mean, std, len(runs))
                    rows.append({"benchmark": runs[0]["benchmark"], "task": task, "method": m, "selection": selection,
                                 "metric": "test_acc", "mean": mean, "std": std, "n_seeds": len(runs), "paper_value": None,
                                 "command": command, "n_failed": 0, **costs(runs)})
    tasks = list(dict.fromkeys(r["task"] for r in rows))

    def averages(m: str) -> tuple[float, float]:
        ins = [value[(m, t, "source_val")][0] for t in tasks if "in-domain" in t and (m, t, "source_val") in value]
        cross = [value[(m, t, "source_val")][0] for t in tasks if "->" in t and (m, t, "source_val") in value]
        return statistics.fmean(ins), statistics.fmean(cross)

    lines = [f"# {study.title}", "", "Test accuracy (%), mean ± std over seeds (`(n=k)` marks a cell with fewer finished "
             "seeds than the others), at the step chosen by `source_val` (best accuracy on the labelled validation split "
             "of the training domain; `last` in the CSV). Cross-domain columns never see the target domain.", "",
             "| method | " + " | ".join(tasks) + " | avg in-domain | avg cross-domain | trainable | % of total | "
             "time/step (ms) | peak memory (MB) | seeds |", "|---" * (len(tasks) + 8) + "|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m and r["selection"] == "source_val"]
        shown = {r["task"]: format_mean_std(r["mean"], r["std"]) + (f" (n={r['n_seeds']})" if r["n_seeds"] < seeds else "")
                 for r in mine}
        lines.append(f"| {m} | " + " | ".join(shown.get(t, "") for t in tasks) + " | "
                     + " | ".join(_fmt(v) for v in averages(m)) + f" | {_fmt(mine[0]['trainable_params'])} | "
                     f"{_pct(mine[0]['trainable_percent'])} | "
                     f"{statistics.fmean(r['time_per_step_ms'] for r in mine):.0f} | "
                     f"{max(r['peak_memory_mb'] or 0 for r in mine):.0f} | {min(r['n_seeds'] for r in mine)} |")
    if "full_finetune" in methods:
        full_in, full_cross = averages("full_finetune")
        stds = [v[1] for (_, _, sel), v in value.items() if sel == "source_val" and v[2] > 1 and v[1] is not None]
        lines += ["", "## Against full fine-tuning", "", "Computed from the table above: each method's average minus full "
                  f"fine-tuning's ({full_in:.2f} in-domain, {full_cross:.2f} cross-domain), in points, and whether it "
                  f"meets the LoRA paper's shape (within {PEFT_MAX_POINTS_BELOW_FULL:g} points of full FT on both averages, "
                  f"with under {PEFT_MAX_TRAINABLE_PERCENT:g}% of the parameters trained)."
                  + (f" Seed-to-seed std of a single cell: median {statistics.median(stds):.2f}, max {max(stds):.2f} "
                     "points." if stds else ""), ""]
        for m in (m for m in methods if m != "full_finetune"):
            m_in, m_cross = averages(m)
            pct = next(r["trainable_percent"] for r in rows if r["method"] == m)
            misses = peft_shape_misses({"in-domain": m_in - full_in, "cross-domain": m_cross - full_cross}, pct)
            lines.append(f"- {m}: {m_in - full_in:+.2f} in-domain, {m_cross - full_cross:+.2f} cross-domain, "
                         f"{_pct(pct)}% trained: " + (f"misses on {', '.join(misses)}" if misses else "meets it"))
    lines += ["", "## Commands", ""] + [f"- {r['method']} ({r['task']}): `{r['command']}`" for r in rows
                                         if r["selection"] == "last" and "->" in r["task"]]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    best = max(methods, key=lambda m: averages(m)[1], default=None)
    headline = (f"best cross-domain average: {best} {averages(best)[1]:.2f} (in-domain {averages(best)[0]:.2f})"
                if best else "no finished run yet")
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline, COLUMNS + COST_COLUMNS)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
