"""Renderer of the feature-space analysis: per analysed run its target accuracy, proxy A-distance and ECE, and the
t-SNE and reliability figures, all drawn from the measurement records (measurement=feature_analysis)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dacl.analysis.domain import draw_reliability, draw_tsne
from dacl.studies.spec import Study
from dacl.studies.tables import Rendered, _tail, renderer


def _name(record: dict[str, Any]) -> str:
    m = record["metrics"]
    variant = f" [{m['analysed_variant']}]" if m.get("analysed_variant") else ""
    return f"{m['analysed_method']}{variant} seed{m['analysed_seed']}"


@renderer("feature_analysis")
def feature_analysis(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                     provenance: list[str]) -> tuple[str, Rendered]:
    """One row per analysed run, in the grid's order (the first is the "before" panel, normally source-only)."""
    name = Path(study.table).name
    lines = [f"# {study.title}", "", "Proxy A-distance (PAD) between source-test and target-test features (a linear "
             "domain classifier trained on half, scored on the other half; 0 = indistinguishable, 2 = separable), "
             "target test accuracy and ECE (%) of each run's final model (no checkpoint selection). Figures: t-SNE of "
             "the features (source blue, target coloured by true class; the labels colour points only) and a "
             "reliability diagram.", "", "| run | task | target acc | PAD | ECE |", "|---|---|---|---|---|"]
    rows = []
    for r in ok:
        m = r["metrics"]
        lines.append(f"| {_name(r)} | {m['analysed_task']} | {m['target_acc']:.2f} | {m['proxy_a_distance']:.3f} | "
                     f"{m['target_ece']:.2f} |")
        for metric in ("target_acc", "proxy_a_distance", "target_ece"):
            rows.append({"benchmark": m["analysed_benchmark"], "task": m["analysed_task"],
                         "method": _name(r), "selection": "last", "metric": metric, "mean": m[metric], "std": None,
                         "n_seeds": 1, "paper_value": None, "command": r.get("command"), "n_failed": 0})
    figures = {}
    if ok:
        panels = {f"{_name(r)}: acc {r['metrics']['target_acc']:.1f}%, PAD {r['metrics']['proxy_a_distance']:.2f}":
                  r["metrics"]["tsne"] for r in ok}
        curves = {f"{_name(r)} (ECE {r['metrics']['target_ece']:.1f}%)": r["metrics"]["reliability"] for r in ok}
        figures = {"tsne": lambda path: draw_tsne(panels, path), "reliability": lambda path: draw_reliability(curves, path)}
        lines += ["", f"![t-SNE]({name}_tsne.png)", "", f"![reliability]({name}_reliability.png)"]
    lines += ["", "## Commands", ""] + [f"- {_name(r)}: analysed by `{r.get('command')}`; trained by "
                                         f"`{r['metrics']['run_command']}`" for r in ok]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    headline = "; ".join(f"{_name(r)}: PAD {r['metrics']['proxy_a_distance']:.2f}, ECE {r['metrics']['target_ece']:.1f}"
                         for r in ok) or "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline, figures=figures)
