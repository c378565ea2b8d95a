"""Renderers of the fine-tuning tables: accuracy beside what each update costs (trainable parameters, time per step,
peak memory), and whether each parameter-efficient update keeps the LoRA paper's shape against full fine-tuning."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
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


def _backbone(record: dict[str, Any]) -> str:
    return str(record["config"]["model"]["backbone"])


def _label(record: dict[str, Any]) -> str:
    """The update a run trained: ``scratch`` is source-only training that started from no pre-trained weights."""
    method = record["method"]
    return "scratch" if method == "source_only" and not record.get("pretrained_from") else method


def _labels(record: dict[str, Any]) -> int | None:
    """Labelled target examples the run trained on (None: all of them)."""
    return record["config"]["benchmark"].get("max_source_train")


@renderer("finetune_vision")
def finetune_vision(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                    provenance: list[str]) -> tuple[str, Rendered]:
    """Supervised fine-tuning on the target's labels, from a backbone pre-trained on the source domain: one row per
    update and backbone on all labels (accuracy beside its cost, and its gap to full fine-tuning of the same
    backbone), and, where the grid holds runs on fewer labels, the label-efficiency curve as a figure."""
    cells: dict[tuple[str, str, str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        cells[(r["task"], _label(r), _backbone(r), _labels(r))].append(r)
    rows: list[dict[str, Any]] = []
    value: dict[tuple[str, str, str, int | None, str], tuple[float, float | None, int]] = {}
    cell_costs = {key: costs(runs) for key, runs in cells.items()}  # parameter counts and timings, once per cell
    for (task, label, backbone, n), runs in cells.items():
        command = sweep_command([r.get("command") for r in runs], [r["seed"] for r in runs])
        for selection in ("last", "source_val"):
            mean, std = accuracy(runs, selection, "target_test_acc")
            value[(task, label, backbone, n, selection)] = (mean, std, len(runs))
            rows.append({"benchmark": runs[0]["benchmark"], "task": task, "method": f"{label} [{backbone}]",
                         "selection": selection, "metric": "target_acc", "mean": mean, "std": std,
                         "n_seeds": len(runs), "paper_value": None, "command": command, "n_failed": 0,
                         "n_labels": n if n is not None else runs[0]["data_sizes"]["source_train"],
                         **cell_costs[(task, label, backbone, n)]})
    lines = [f"# {study.title}", "", "Target test accuracy (%), mean ± std over seeds (one seed: its value alone), "
             "training on every labelled target example. `last` = final step; `source_val` = the step with the best "
             "accuracy on the labelled 10% validation split of the target's training set (the run's own training "
             "domain; never the test set).", "",
             "| task | update [backbone] | last | source_val | trainable | % of total | time/step (ms) | "
             "peak memory (MB) | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for (task, label, backbone, n), runs in cells.items():
        if n is not None:
            continue
        last, val = value[(task, label, backbone, n, "last")], value[(task, label, backbone, n, "source_val")]
        cost = cell_costs[(task, label, backbone, n)]
        lines.append(f"| {task} | {label} [{backbone}] | {format_mean_std(*last[:2])} | {format_mean_std(*val[:2])} | "
                     f"{_fmt(cost['trainable_params'])} | {_pct(cost['trainable_percent'])} | "
                     f"{cost['time_per_step_ms']:.1f} | {cost['peak_memory_mb'] or 0:.0f} | {len(runs)} |")
    shape = []
    for (task, label, backbone, n), runs in cells.items():
        reference = value.get((task, "full_finetune", backbone, None, "source_val"))
        if n is not None or label in ("scratch", "full_finetune") or reference is None:
            continue
        gap = value[(task, label, backbone, n, "source_val")][0] - reference[0]
        pct = cell_costs[(task, label, backbone, n)]["trainable_percent"]
        misses = peft_shape_misses({"accuracy": gap}, pct)
        shape.append(f"- {task} {label} [{backbone}]: {gap:+.2f} points against full fine-tuning's "
                     f"{format_mean_std(*reference[:2])}, {_pct(pct)}% trained: "
                     + (f"misses on {', '.join(misses)}" if misses else "meets it"))
    if shape:
        lines += ["", "## Against full fine-tuning", "", "Computed from the table above (`source_val` column): each "
                  "update's accuracy minus full fine-tuning's on the same backbone, and whether it meets the LoRA "
                  f"paper's shape (within {PEFT_MAX_POINTS_BELOW_FULL:g} points of full fine-tuning, with under "
                  f"{PEFT_MAX_TRAINABLE_PERCENT:g}% of the parameters trained).", "", *shape]
    curve = _curve(cells, value)
    figures = {}
    if curve:
        figures["label_efficiency"] = lambda path: _draw_curve(curve, study.title, path)
        lines += ["", "## Label efficiency", "", "Target test accuracy (%) at the last step against the number of "
                  "labelled target examples (the largest = every label: the run of the table above).", "",
                  f"![label efficiency]({Path(study.table).name}_label_efficiency.png)", "",
                  "| task | update [backbone] | " + " | ".join(str(n) for n in _sizes(curve)) + " |",
                  "|---|---|" + "---|" * len(_sizes(curve))]
        for (task, label, backbone), points in curve.items():
            shown = {n: format_mean_std(m, s) for n, m, s in points}
            lines.append(f"| {task} | {label} [{backbone}] | " + " | ".join(shown.get(n, "") for n in _sizes(curve)) + " |")
    lines += ["", "## Commands", ""] + [f"- {r['method']} ({r['task']}, {r['n_labels']} labels): `{r['command']}`"
                                         for r in rows if r["selection"] == "last"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    tops = {}
    for (task, label, backbone, n, selection), (mean, _, _) in value.items():
        if n is None and selection == "source_val" and label != "scratch":
            tops.setdefault(backbone, []).append((mean, label))
    headline = "; ".join(f"{backbone}: best {max(v)[1]} {max(v)[0]:.2f}" for backbone, v in tops.items()) \
        or "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline, COLUMNS + ["n_labels"] + COST_COLUMNS,
                                                                         figures)


def _curve(cells: dict, value: dict) -> dict[tuple[str, str, str], list[tuple[int, float, float | None]]]:
    """(task, update, backbone) -> [(labels, mean, std)] for every update the grid also ran on fewer labels."""
    partial = {(t, lab, b) for (t, lab, b, n) in cells if n is not None}
    out: dict[tuple[str, str, str], list[tuple[int, float, float | None]]] = {}
    for (task, label, backbone, n), runs in cells.items():
        if (task, label, backbone) in partial:
            size = n if n is not None else runs[0]["data_sizes"]["source_train"]
            mean, std, _ = value[(task, label, backbone, n, "last")]
            out.setdefault((task, label, backbone), []).append((size, mean, std))
    return {k: sorted(v) for k, v in out.items()}


def _sizes(curve: dict) -> list[int]:
    return sorted({n for points in curve.values() for n, _, _ in points})


def _draw_curve(curve: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (task, label, backbone), points in curve.items():
        ax.errorbar([n for n, _, _ in points], [m for _, m, _ in points], yerr=[s or 0.0 for _, _, s in points],
                    marker="o", capsize=3, label=f"{label} [{backbone}] {task}")
    ax.set(xscale="log", xlabel="labelled target examples", ylabel="target test accuracy (%), last step")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
