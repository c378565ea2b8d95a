"""Renderer of the feature-space analysis: per analysed run its target accuracy, proxy A-distance and ECE, and the
t-SNE and reliability figures, all drawn from the measurement records (measurement=feature_analysis)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dacl.analysis.domain import draw_reliability, draw_tsne
from dacl.reporting import COLUMNS
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


@renderer("streaming_throughput")
def streaming_throughput(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                         provenance: list[str]) -> tuple[str, Rendered]:
    """One row per (dataset size, pipeline, loader workers): the train cell's images/s and peak RSS beside the
    loader-only cell's images/s (measurement=streaming_throughput)."""
    from dacl.studies.tables import measure_command

    cells: dict[tuple[int, str, int], dict[str, dict[str, Any]]] = {}
    for r in ok:
        c = r["config"]
        kind = "data" if c["model"] in (None, "none") else "train"
        cells.setdefault((int(c["images"]), c["pipeline"], int(c["workers"])), {})[kind] = r
    lines = [f"# {study.title}", "", "Every image of a synthetic tree written by `dacl data synth domainnet` (JPEG, "
             "256 x 256, 345 classes) is one dataset; each cell is a fresh process drawing batches with the train "
             "pipeline (resize 256, random-resized crop 224, flip). Train cells also run the same timm SGD step on "
             "each batch for both pipelines; data cells time the loader alone. Peak RSS: the training process, and "
             "the largest DataLoader worker.", "",
             "| images | pipeline | workers | train img/s | data img/s | peak RSS (MB) | worker peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for (n, pipeline, workers), cell in sorted(cells.items()):
        train, data = (cell.get(k, {}).get("metrics", {}) for k in ("train", "data"))
        lines.append(f"| {n:,} | {pipeline} | {workers} | {train.get('images_per_second', '')} | "
                     f"{data.get('images_per_second', '')} | {train.get('peak_rss_mb', '')} | "
                     f"{train.get('worker_peak_rss_mb') or ''} |")
        for kind, r in cell.items():
            m = r["metrics"]
            rows.append({"benchmark": f"domainnet_synthetic_{n}", "task": f"{kind}, {workers} workers",
                         "method": pipeline, "selection": "measured", "metric": "images_per_second",
                         "mean": m["images_per_second"], "std": None, "n_seeds": 1, "paper_value": None,
                         "command": measure_command([r]), "n_failed": 0, "peak_rss_mb": m["peak_rss_mb"],
                         "worker_peak_rss_mb": m.get("worker_peak_rss_mb")})
    lines += ["", "## Commands", ""] + [f"- {r['method']} {r['benchmark']} ({r['task']}): `{r['command']}`" for r in rows]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    commits = sorted({r["metrics"]["tllib_commit"] for r in ok if r["metrics"].get("tllib_commit")})
    if commits:
        provenance = [*provenance, f"TLlib (thuml/Transfer-Learning-Library) at: {', '.join(commits)}"]
    biggest = max((n for n, _, _ in cells), default=None)
    rss = {p: cells[(biggest, p, w)]["train"]["metrics"]["peak_rss_mb"] for (n, p, w) in cells
           if n == biggest and w == 0 and "train" in cells[(n, p, w)]}
    headline = (f"peak RSS at {biggest:,} images (0 workers): " + ", ".join(f"{p} {v:,.0f} MB" for p, v in sorted(rss.items()))
                if rss else "no finished cell yet")
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(
        rows, headline, COLUMNS + ["peak_rss_mb", "worker_peak_rss_mb"])


@renderer("lwf_reference")
def lwf_reference(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                  provenance: list[str]) -> tuple[str, Rendered]:
    """One row per input protocol of the independent LwF loop (measurement=lwf_reference): the average accuracy
    after the last task, the accuracy on each task right after learning it, and the teacher's confidence on each
    new task's first batch."""
    from dacl.studies.tables import measure_command

    lines = [f"# {study.title}", "", "Average test accuracy (%) over all tasks after the last one, the diagonal of "
             "the accuracy matrix (each task right after learning it), the first task's accuracy after the last "
             "task, and the previous model's mean top probability on each new task's first batch (T = 1), of a plain-PyTorch LwF written from the authors' training step "
             "(dacl/analysis/lwf_reference.py), sharing no training code with dacl's `lwf` strategy.", "",
             "| inputs | loss | tasks | steps per task | average accuracy | diagonal | first task at the end | "
             "teacher top probability |",
             "|---|---|---|---|---|---|---|---|"]
    rows = []
    for r in ok:
        c, m = r["config"], r["metrics"]
        inputs = f"{'32 x 32 padded' if c['pad32'] else '28 x 28'}, {'every task' if c['permute_all'] else 'task 0 not'} permuted"
        loss = "LwF" if c.get("distill", True) else "cross-entropy only (control)"
        conf = " / ".join(f"{v[0]:.2f}" for v in m["teacher_confidence"] if v)
        lines.append(f"| {inputs} | {loss} | {c['tasks']} | {c['steps']:,} | {m['average_accuracy']:.2f} | "
                     f"{' / '.join(f'{v:.1f}' for v in m['diagonal'])} | {m['accuracy_matrix'][-1][0]:.2f} | {conf} |")
        method = f"{'lwf' if c.get('distill', True) else 'no distillation'} (reference loop)"
        rows.append({"benchmark": f"permuted_mnist ({inputs})", "task": f"domain-IL, {c['tasks']} tasks",
                     "method": method, "selection": "last", "metric": "average_accuracy",
                     "mean": m["average_accuracy"], "std": None, "n_seeds": 1, "paper_value": None,
                     "command": measure_command([r]), "n_failed": 0})
    lines += ["", "## Commands", ""] + [f"- {r['benchmark']}, {r['task']}, {r['method']}: `{r['command']}`"
                                        for r in rows]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    headline = "; ".join(f"{r['benchmark']}, {r['task']}, {r['method']}: {r['mean']:.2f}" for r in rows) \
        or "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)
