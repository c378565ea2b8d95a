"""Per-kind renderers: a study's matched run records -> ``<out>.md`` and ``<out>.csv``, and a one-line headline
for the results index. One aggregation per kind, registered by decorator; the study file picks it by ``kind``."""
from __future__ import annotations

import json
import math
from statistics import fmean
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dacl.engine.results import atomic_write_text
from dacl.reporting import (COLUMNS, _fmt, _label, aggregate, format_mean_std, mean_std, processes,
                            sweep_command, to_csv, to_markdown)
from dacl.run_spec import RUNTIME_KEYS, migrate_legacy
from dacl.studies.spec import Study


@dataclass
class Rendered:
    rows: list[dict[str, Any]]  # the CSV rows
    headline: str               # one line for paper_results/README.md
    columns: list[str] = field(default_factory=lambda: list(COLUMNS))  # the CSV's columns
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # "<suffix>": draws <out>_<suffix>.png


Renderer = Callable[[Study, list[dict[str, Any]], list[dict[str, Any]], list[str], list[str]], tuple[str, Rendered]]
RENDERERS: dict[str, Renderer] = {}


def renderer(kind: str) -> Callable[[Renderer], Renderer]:
    def add(fn: Renderer) -> Renderer:
        RENDERERS[kind] = fn
        return fn
    return add


def render(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], out: Path | None,
           notes: list[str], provenance: list[str]) -> Rendered:
    """Write ``out``.md/.csv for ``study`` from its records (nothing when ``out`` is None: the headline alone);
    the Markdown ends with notes and provenance."""
    markdown, rendered = RENDERERS[study.kind](study, ok, failed, notes, provenance)
    if out is None:
        return rendered
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".csv"), to_csv(rendered.rows, rendered.columns))
    atomic_write_text(out.with_suffix(".md"), markdown)
    for suffix, draw in rendered.figures.items():
        figure = out.with_name(f"{out.name}_{suffix}.png")
        partial = figure.with_suffix(".tmp.png")
        draw(partial)
        partial.replace(figure)  # a reader never finds half a figure
    return rendered


def _tail(notes: list[str], provenance: list[str]) -> str:
    text = ("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes)) if notes else ""
    return text + "\n## Provenance\n\n" + "".join(f"- {p}\n" for p in provenance)


def _best(rows: list[dict[str, Any]], selection: str) -> str:
    """'dann 81.20 (source_only 77.28)' under ``selection``: the top mean, against source-only where present."""
    chosen = [r for r in rows if r["selection"] == selection and not math.isnan(r["mean"])]
    if not chosen:
        return "no finished run yet"
    top = max(chosen, key=lambda r: r["mean"])
    base = _source_only_row(top, chosen)
    ref = f" ({base['method']} {base['mean']:.2f})" if base is not None and base is not top else ""
    return f"best under {selection}: {top['method']} {top['mean']:.2f}{ref}"


def _throughput(ok: list[dict[str, Any]]) -> str:
    ips: dict[str, list[float]] = defaultdict(list)
    for r in ok:
        procs = processes(r)
        ips[r["method"] + (f" ({procs} processes)" if procs > 1 else "")].append(r["train_images_per_second"])
    return ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in sorted(ips.items()))


@renderer("domain_adaptation")
def domain_adaptation(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                      provenance: list[str]) -> tuple[str, Rendered]:
    """Target accuracy per method under every selection protocol (DomainBed-style columns)."""
    rows = aggregate(ok, study.paper_lookup(), failed=failed)
    if ok:
        provenance = [*provenance, f"training throughput (img/s, mean over runs): {_throughput(ok)}"]
    selection = "source_val" if any(r["selection"] == "source_val" for r in rows) else "last"
    gains = against_source_only(rows, selection)
    markdown = to_markdown(rows, failed, study.title, []).rstrip("\n") + "\n" + gains + _tail(notes, provenance)
    return markdown, Rendered(rows, _best(rows, selection))


GAIN_BAR = 2.0  # points over source-only an adapted row must clear, or its shortfall needs a measured reason


def _source_only_row(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The source-only row ``row`` improves on: same task and, for a variant row ("dann [x]"), the same variant."""
    suffix = row["method"].partition(" ")[2]
    same_task = [r for r in rows if (r["benchmark"], r["task"]) == (row["benchmark"], row["task"])]
    return next((r for r in same_task if r["method"] == f"source_only {suffix}".strip()), None) or \
        next((r for r in same_task if r["method"] == "source_only"), None)


def against_source_only(rows: list[dict[str, Any]], selection: str) -> str:
    """A section listing each adapted row's gain over its source-only row under ``selection``, those under
    ``GAIN_BAR`` marked: what a reader checks first in a DA table, computed rather than eyeballed."""
    chosen = [r for r in rows if r["selection"] == selection and not math.isnan(r["mean"])]
    lines = []
    for r in chosen:
        base = _source_only_row(r, chosen)
        if r["method"].startswith("source_only") or base is None:
            continue
        gain = r["mean"] - base["mean"]
        seeds = "" if r["n_seeds"] == base["n_seeds"] else f"; {r['n_seeds']} vs {base['n_seeds']} seeds"
        mark = f" — under +{GAIN_BAR:g}, see the notes" if gain < GAIN_BAR else ""
        lines.append(f"- {r['task']}, {r['method']}: {gain:+.2f} over {base['method']} ({r['mean']:.2f} vs "
                     f"{base['mean']:.2f}{seeds}){mark}")
    if not lines:
        return ""
    return (f"\n## Against source-only\n\nTarget accuracy gain under `{selection}` selection over the same task's "
            "source-only row (mean over seeds):\n\n" + "\n".join(lines) + "\n" + _average_gains(chosen))


def _average_gains(chosen: list[dict[str, Any]]) -> str:
    """With several tasks: each method's mean accuracy and gain over the tasks where both it and its source-only row
    have results (how many, said), so a partly run grid is never averaged over different task sets."""
    tasks = {(r["benchmark"], r["task"]) for r in chosen}
    if len(tasks) < 2:
        return ""
    per_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in chosen:
        base = _source_only_row(r, chosen)
        if base is not None and not r["method"].startswith("source_only"):
            per_method[r["method"]].append((r["mean"], base["mean"]))
    lines = []
    for method, pairs in sorted(per_method.items(), key=lambda kv: -sum(a - b for a, b in kv[1]) / len(kv[1])):
        acc, base = (sum(v) / len(pairs) for v in zip(*pairs))
        mark = f" — under +{GAIN_BAR:g}, see the notes" if acc - base < GAIN_BAR else ""
        lines.append(f"- {method}: {acc:.2f} vs source-only {base:.2f}, {acc - base:+.2f} over {len(pairs)} of "
                     f"{len(tasks)} tasks{mark}")
    return "\nAveraged over tasks (each method over the tasks it has run):\n\n" + "\n".join(lines) + "\n"


@renderer("test_time_adaptation")
def test_time_adaptation(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                         provenance: list[str]) -> tuple[str, Rendered]:
    """Target accuracy after adaptation per method, variant and protocol, each seed beside the unadapted source
    model it started from (one row per task: the same trained model for every method of a seed)."""
    paper = study.paper_lookup()
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    source: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        tta = r["metrics"]["test_time_adaptation"]
        groups[(r["benchmark"], r["task"], _label(r["method"], r.get("variant")), tta["protocol"])].append(r)
        source[(r["benchmark"], r["task"])][r["seed"]].append(100 * tta["source_target_test_acc"])

    def row(bench: str, task: str, label: str, protocol: str, per_seed: dict[int, float], command: str) -> dict[str, Any]:
        mean, std = mean_std(per_seed.values())
        return {"benchmark": bench, "task": task, "method": label, "selection": "none", "metric": "target_acc",
                "mean": mean, "std": std, "n_seeds": len(per_seed), "paper_value": paper.get(bench, {}).get(label),
                "command": command, "protocol": protocol, "per_seed": per_seed}

    rows = []
    for bench, task in dict.fromkeys((b, t) for b, t, _, _ in groups):
        seeds = source[(bench, task)]
        rows.append(row(bench, task, "source model", "no adaptation", {s: sum(v) / len(v) for s, v in sorted(seeds.items())},
                        f"dacl reproduce {study.name} (the source run every row adapts)"))
        for (b, t, label, protocol), runs in groups.items():
            if (b, t) == (bench, task):
                per_seed = {r["seed"]: 100 * r["metrics"]["target_test_acc"]["last"] for r in sorted(runs, key=lambda r: r["seed"])}
                rows.append(row(b, t, label, protocol, per_seed,
                                sweep_command([r.get("command") for r in runs], [r["seed"] for r in runs])))
    tasks = len({(r["benchmark"], r["task"]) for r in rows})
    lines = [f"# {study.title}", "", "Target test accuracy (%) after adaptation, mean ± std over seeds. No selection: "
             "every number is the model after its protocol ends (online: predictions made while adapting on the test "
             "batches; offline: the frozen model after its passes over the unlabelled target training set). Target "
             "labels only score. `source model` is the unadapted model each seed's rows start from.", "",
             ("| task " if tasks > 1 else "") + "| method | protocol | accuracy | seeds | per seed | paper |",
             ("|---" if tasks > 1 else "") + "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = " / ".join(f"{v:.2f}" for v in r["per_seed"].values())
        lines.append((f"| {r['task']} " if tasks > 1 else "") + f"| {r['method']} | {r['protocol']} | "
                     f"{format_mean_std(r['mean'], r['std'])} | {r['n_seeds']} | {seeds} | {_fmt(r['paper_value'])} |")
    lines += ["", "## Commands", ""] + [f"- {r['method']} ({r['protocol']}): `{r['command']}`" for r in rows[1:]
                                         if r["method"] != "source model"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    adapted = [r for r in rows if r["method"] != "source model"]
    best = max(adapted, key=lambda r: r["mean"], default=None)
    base = next((r for r in rows if r["method"] == "source model" and best is not None
                 and (r["benchmark"], r["task"]) == (best["benchmark"], best["task"])), None)
    headline = (f"best: {best['method']} ({best['protocol']}) {best['mean']:.2f} (source model {base['mean']:.2f})"
                if best is not None and base is not None else "no finished run yet")
    csv_rows = [{k: r.get(k) for k in COLUMNS} for r in rows]
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(csv_rows, headline)


@renderer("tta_corruptions")
def tta_corruptions(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                    provenance: list[str]) -> tuple[str, Rendered]:
    """Error (%) per corruption of a corruption suite (one run per method x protocol x severity group): the last
    group's corruptions one by one, then the mean of every group and over all groups, beside the source model."""
    errors: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    commands: dict[str, list[dict[str, Any]]] = defaultdict(list)
    groups: dict[str, Any] = {}  # domain -> its group
    for r in ok:
        tta = r["metrics"]["test_time_adaptation"]
        column = f"{_label(r['method'], r.get('variant'))} [{tta['protocol']}]"
        commands[column].append(r)
        for name in tta.get("domain_order") or tta["per_domain"]:
            acc = tta["per_domain"][name]
            groups[name] = tta["domain_group"]
            errors[column][name][r["seed"]].append(100 * (1 - acc))
            errors["source model"][name][r["seed"]].append(100 * (1 - tta["source_per_domain"][name]))
    if not ok:
        return f"# {study.title}\n\nNo finished run yet.\n" + _tail(notes, provenance), Rendered([], "no finished run yet")
    columns = ["source model", *sorted(c for c in errors if c != "source model")]
    cell = lambda col, names: mean_std([sum(v) / len(v) for n in names for v in errors[col][n].values()])  # noqa: E731
    order = sorted(set(groups.values()), key=str)
    last = [n for n in groups if groups[n] == order[-1]]
    lines_of = [(n, [n]) for n in last] + [(f"mean@{g}", [n for n in groups if groups[n] == g]) for g in order]
    lines_of.append((f"mean@{order[0]}-{order[-1]}" if len(order) > 1 else "mean", list(groups)))
    rows, table = [], [f"# {study.title}", "", "Error (%) on each corrupted test set after adaptation (lower is "
                   "better); `source model`: the unadapted model every column adapts. `episodic_domain` resets to the "
                   "source model at each corruption; `continual` meets the corruptions of one severity in turn and never "
                   f"resets. Rows: the corruptions at severity {order[-1]}, then the mean per severity and over all "
                   "severities. No selection, target labels only score."
                   + (" A published error is in brackets (its source in the notes)." if study.paper else ""), "",
                   "| corruption | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    bench = ok[0]["benchmark"]
    paper = study.paper_lookup().get(bench, {})  # {row: {column: published error}}
    for label, names in lines_of:
        values = {c: cell(c, names) for c in columns if any(errors[c][n] for n in names)}
        shown = {c: f"{v[0]:.1f}" + (f" ({paper[label][c]:g})" if c in paper.get(label, {}) else "")
                 for c, v in values.items()}
        table.append(f"| {label} | " + " | ".join(shown.get(c, "") for c in columns) + " |")
        rows += [{"benchmark": bench, "task": label, "method": c, "selection": "none", "metric": "error",
                  "mean": v[0], "std": v[1], "n_seeds": len({s for n in names for s in errors[c][n]}),
                  "paper_value": paper.get(label, {}).get(c),
                  "command": f"dacl reproduce {study.name} (the source run of every column)" if c == "source model" else
                  sweep_command([r.get("command") for r in commands[c]], [r["seed"] for r in commands[c]],
                                {"tta.domain_group": [r["metrics"]["test_time_adaptation"]["domain_group"]
                                                      for r in commands[c]]})}
                 for c, v in values.items()]
    overall = {c: cell(c, list(groups))[0] for c in columns}
    ranked = sorted(columns, key=overall.__getitem__, reverse=True)
    table += ["", "Mean error over every corrupted set, highest first: "
              + " > ".join(f"{c} {overall[c]:.1f}" for c in ranked) + ".", "", "## Commands", ""]
    table += [f"- {c}: `{next(r['command'] for r in rows if r['method'] == c)}`" for c in columns[1:]]
    if failed:
        table += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    best = min(columns[1:], key=overall.__getitem__) if len(columns) > 1 else None
    headline = (f"mean error {best} {overall[best]:.1f} (source model {overall['source model']:.1f})" if best
                else "no finished run yet")
    return "\n".join(table) + "\n" + _tail(notes, provenance), Rendered([{k: r.get(k) for k in COLUMNS} for r in rows],
                                                                        headline)


@renderer("feature_space")
def feature_space(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                  provenance: list[str]) -> tuple[str, Rendered]:
    """Shallow DA on features (closed form, deterministic): tasks as rows, adapter + classifier as columns (the
    papers' layout), and the average over tasks."""
    acc: dict[str, dict[str, float]] = defaultdict(dict)
    commands: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        for clf, value in r["metrics"]["classifier_acc"].items():
            column = f"{r['method_hparams']['adapter']} + {clf}"
            acc[column][r["task"]] = 100 * value
            commands[column].append(r)
    if not ok:
        return f"# {study.title}\n\nNo finished run yet.\n" + _tail(notes, provenance), Rendered([], "no finished run yet")
    columns, tasks = list(acc), list(dict.fromkeys(r["task"] for r in ok))
    bench = ok[0]["benchmark"]
    average = {c: sum(acc[c].values()) / len(acc[c]) for c in columns}
    lines = [f"# {study.title}", "", "Target accuracy (%). Each adapter aligns the source features to the target's in "
             "closed form, then each classifier is fit on the adapted source; target labels only score. Deterministic "
             "(exact solvers, 1-NN, LIBSVM): one run per cell, no selection.", "",
             "| task | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {t} | " + " | ".join(f"{acc[c][t]:.1f}" if t in acc[c] else "" for c in columns) + " |" for t in tasks]
    lines.append("| average | " + " | ".join(f"{average[c]:.1f}" for c in columns) + " |")
    adapters = dict.fromkeys(r["method_hparams"]["adapter"] for r in ok)
    lines += ["", "## Commands", ""] + [
        f"- {a}: `{sweep_command([r.get('command') for r in runs], [r['seed'] for r in runs], {'benchmark.source': [r['config']['benchmark']['source'] for r in runs], 'benchmark.target': [r['config']['benchmark']['target'] for r in runs]})}`"
        for a in adapters for runs in [[r for r in ok if r["method_hparams"]["adapter"] == a]]]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    rows = [{"benchmark": bench, "task": t, "method": c, "selection": "fixed", "metric": "target_acc", "mean": acc[c][t],
             "std": 0.0, "n_seeds": 1, "paper_value": None, "command": commands[c][0].get("command")}
            for t in tasks for c in columns if t in acc[c]]
    rows += [{"benchmark": bench, "task": "average", "method": c, "selection": "fixed", "metric": "target_acc",
              "mean": average[c], "std": 0.0, "n_seeds": 1, "paper_value": None,
              "command": f"dacl reproduce {study.name} (the mean of its task rows)"} for c in columns]
    best = max(columns, key=average.__getitem__)
    base = next((c for c in columns if c.startswith("none + ") and c.endswith(best.partition(" + ")[2])), None)
    headline = f"best average: {best} {average[best]:.1f}" + (f" ({base} {average[base]:.1f})" if base and base != best else "")
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)


def measure_command(runs: list[dict[str, Any]]) -> str:
    """The command of a row's measurements: one `dacl measure` per seed (it has no multirun), as `seed=K`."""
    import re

    command = str(runs[0].get("command") or "")
    seeds = sorted({r["seed"] for r in runs})
    if len(seeds) < 2:
        return command
    return re.sub(r"(?<![\w.])seed=\S+", "seed=K", command) + f" (K = {', '.join(map(str, seeds))}, one run each)"


@renderer("framework_comparison")
def framework_comparison(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                         provenance: list[str]) -> tuple[str, Rendered]:
    """dacl against another framework on the same stream: accuracy, forgetting, stream images/s and each strategy's
    step cost relative to the same framework's naive fine-tuning (measurement=avalanche_comparison)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[(r["config"]["strategy"], r["config"]["framework"])].append(r)
    speed = {fw: fmean([r["metrics"]["images_per_second"] for r in rs]) for (st, fw), rs in groups.items() if st == "naive"}
    lines = [f"# {study.title}", "", "Average accuracy over the tasks after the last one (%, mean ± std over seeds), average "
             "forgetting (points), stream images per second of each framework's own training call, and each strategy's "
             "step cost against the same framework's naive fine-tuning.", "",
             "| strategy | framework | avg acc | forgetting | stream images/s | step cost vs own naive | seeds |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for (strategy, framework), rs in sorted(groups.items()):
        acc = mean_std([100 * r["metrics"]["average_accuracy"] for r in rs])
        ips = fmean([r["metrics"]["images_per_second"] for r in rs])
        cost = f"{speed[framework] / ips:.2f}x" if framework in speed else "n/a"
        lines.append(f"| {strategy} | {framework} | {format_mean_std(*acc)} | "
                     f"{fmean([100 * r['metrics']['forgetting'] for r in rs]):.2f} | {ips:,.0f} | {cost} | {len(rs)} |")
        rows.append({"benchmark": rs[0]["benchmark"], "task": "class", "method": f"{strategy} [{framework}]",
                     "selection": "final", "metric": "average_acc", "mean": acc[0], "std": acc[1], "n_seeds": len(rs),
                     "paper_value": None, "command": measure_command(rs), "n_failed": 0})
    lines += ["", "## Commands", ""] + [f"- {r['method']}: `{r['command']}`" for r in rows]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    versions = sorted({r["metrics"]["avalanche_version"] for r in ok if "avalanche_version" in r["metrics"]})
    if versions:
        provenance = [*provenance, f"avalanche-lib: {', '.join(versions)}"]
    naive = {fw: v for fw, v in speed.items()}
    headline = ("naive images/s " + ", ".join(f"{fw} {v:,.0f}" for fw, v in sorted(naive.items()))) if naive else \
        "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)


@renderer("throughput")
def throughput(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
               provenance: list[str]) -> tuple[str, Rendered]:
    """Training images/s and ms per step per method (measurement=train_throughput), with each step's cost against
    source-only per step and per image (a DA step also processes a target batch)."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by_method[r["config"]["method"]].append(r)
    ips = {m: fmean([r["metrics"]["images_per_second"] for r in rs]) for m, rs in by_method.items()}
    ms = {m: fmean([r["metrics"]["ms_per_step"] for r in rs]) for m, rs in by_method.items()}
    lines = [f"# {study.title}", "", "Training throughput through the Trainer, warm-up steps excluded; a DA step "
             "processes the source batch and an equal target batch, so its cost is given per step and per image.", "",
             "| method | images/s | ms/step | step cost vs source_only | per-image cost vs source_only |",
             "|---|---|---|---|---|"]
    rows = []
    for m in by_method:
        step = f"{ms[m] / ms['source_only']:.2f}x" if "source_only" in ms else ""
        image = f"{ips['source_only'] / ips[m]:.2f}x" if "source_only" in ips else ""
        lines.append(f"| {m} | {ips[m]:.0f} | {ms[m]:.1f} | {step} | {image} |")
        rs = by_method[m]
        rows.append({"benchmark": rs[0]["benchmark"], "task": rs[0]["metrics"].get("task", ""), "method": m,
                     "selection": "none", "metric": "images_per_second", "mean": ips[m], "std": None,
                     "n_seeds": len(rs), "paper_value": None, "command": rs[0].get("command"), "n_failed": 0})
    lines += ["", "## Commands", ""] + [f"- {r['method']}: `{r['command']}`" for r in rows]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    headline = ", ".join(f"{m} {ips[m]:.0f} img/s" for m in list(by_method)[:3]) or "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)


@renderer("fault_matrix")
def fault_matrix(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                 provenance: list[str]) -> tuple[str, Rendered]:
    """Every fault case (measurement=fault_case): the command a user would run, what should happen, what did."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    cases = [r["metrics"] for r in ok]
    passed = sum(bool(c["passed"]) for c in cases)
    lines = [f"# {study.title}", "", f"{passed} of {len(cases)} cases pass. Each case runs `dacl` in a subprocess, as a "
             "user would, on the offline benchmarks and small files it writes itself into a temporary folder (shown as "
             "<tmp>).", "", "| case | command | expected | observed | pass |", "|---|---|---|---|---|"]
    lines += [f"| {cell(c['case'])} | `{cell(c['fault_command'])}` | {cell(c['expected'])} | {cell(c['observed'])} | "
              f"{'yes' if c['passed'] else 'NO'} |" for c in cases]
    if failed:
        lines += ["", "## Cases that could not run", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    rows = [{"benchmark": "faults", "task": c["case"], "method": "dacl", "selection": "none", "metric": "passed",
             "mean": float(bool(c["passed"])), "std": None, "n_seeds": 1, "paper_value": None,
             "command": c["fault_command"]} for c in cases]
    headline = f"{passed} of {len(cases)} fault cases pass" if cases else "no finished run yet"
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)


SCENARIOS = ("task", "domain", "class")


@renderer("continual")
def continual(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
              provenance: list[str]) -> tuple[str, Rendered]:
    """Average accuracy after the last task, BWT, forgetting and throughput per scenario x strategy."""
    paper = study.paper_lookup()
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[(r["stream"], r["scenario"], r["method"])].append(r)
    order = {s: i for i, s in enumerate(SCENARIOS)}
    rows = []
    for (stream, scenario, method), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        row: dict[str, Any] = {"benchmark": stream, "task": scenario, "method": method, "selection": "final",
                               "metric": "average_acc", "n_seeds": len(runs),
                               "paper_value": paper.get(stream, {}).get(scenario, {}).get(method),
                               "command": sweep_command([r.get("command") for r in runs], [r["seed"] for r in runs])}
        for key, scale in (("average_accuracy", 100), ("bwt", 100), ("forgetting", 100), ("images_per_second", 1)):
            vals = [scale * r["metrics"][key] for r in runs if key in r["metrics"]]
            row[key] = mean_std(vals) if vals else None
        row["mean"], row["std"] = row["average_accuracy"]
        rows.append(row)
    pm = lambda v: "" if v is None else format_mean_std(*v)  # noqa: E731
    lines = [f"# {study.title}", "", "Average test accuracy (%) over all tasks after the last task (mean ± std over "
             "seeds; a cell with one seed shows its value alone), backward transfer and average forgetting (percentage "
             "points), training throughput (stream images/s). The final model is evaluated: no selection, no test "
             "labels used.", "", "| scenario | method | avg acc | paper | BWT | forgetting | images/s | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ips = "" if r["images_per_second"] is None else f"{r['images_per_second'][0]:.0f}"
        lines.append(f"| {r['task']}-IL | {r['method']} | {pm(r['average_accuracy'])} | {_fmt(r['paper_value'])} | "
                     f"{pm(r['bwt'])} | {pm(r['forgetting'])} | {ips} | {r['n_seeds']} |")
    lines += ["", "## Commands", ""] + [f"- {r['task']}-IL {r['method']}: `{r['command']}`" for r in rows]
    if failed:
        lines += ["", "## Failed runs (not averaged)", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    parts = []  # joint training is the upper bound, not a strategy: the best strategy is shown against it
    for s in SCENARIOS:
        best = max((r for r in rows if r["task"] == s and r["method"] != "joint"), key=lambda r: r["mean"], default=None)
        joint = next((r for r in rows if r["task"] == s and r["method"] == "joint"), None)
        if best:
            parts.append(f"{s}-IL {best['method']} {best['mean']:.2f}" + (f" (joint {joint['mean']:.2f})" if joint else ""))
    headline = "; ".join(parts)
    if ok:  # what the runs trained with, read from their records
        config = migrate_legacy(ok[0]["config"], "continual")
        loop = {k: v for k, v in config["trainer"].items() if f"trainer.{k}" not in RUNTIME_KEYS["continual"]}
        notes = [f"Protocol: {json.dumps(loop)}; model {config.get('model')}.", *notes]
    csv_rows = [{k: r.get(k) for k in COLUMNS} for r in rows]
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(csv_rows, headline or "no finished run yet")


@renderer("validator_study")
def validator_study(study: Study, ok: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str],
                    provenance: list[str]) -> tuple[str, Rendered]:
    """How well each label-free validator ranks checkpoints and selects models (dacl.analysis.validator_study)."""
    from dacl.analysis.validator_study import study as validator_scores

    runs = [r for r in ok if r.get("history")]
    if not runs:
        return f"# {study.title}\n\nNo finished run with an evaluation history yet.\n" + _tail(notes, provenance), \
            Rendered([], "no finished run yet")
    s = validator_scores(runs)
    methods = s["methods"]
    trials: dict[str, set[Any]] = defaultdict(set)
    for r in runs:
        trials[r["method"]].add(r.get("hparams_seed", 0))
    cmd = sweep_command([runs[0].get("command")], [r["seed"] for r in runs],
                        {"method": [r["method"] for r in runs], "hparams_seed": [r.get("hparams_seed", 0) for r in runs]})
    f = lambda v, scale=1.0: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{scale * v:.2f}"  # noqa: E731
    lines = [f"# {study.title}", "",
             f"{s['n_runs']} runs ({', '.join(f'{m} x{len(trials[m])} trials' for m in methods)}), "
             f"{s['n_checkpoints']} evaluated checkpoints. Spearman: rank correlation between the validator's score and "
             "target test accuracy, pooled over every checkpoint of every run, and averaged within runs. Selected: "
             "target accuracy (%) of the checkpoint the validator scores best among all checkpoints of all trials of a "
             "method (DomainBed-style selection); the oracle reads target labels and is the ceiling, not a protocol.", "",
             "| validator | Spearman (pooled) | Spearman (within run) | " + " | ".join(methods) + " | mean | gap to oracle |",
             "|---|---|---|" + "---|" * (len(methods) + 2)]
    rows = []
    bench, task = runs[0]["benchmark"], runs[0]["task"]
    for v, d in s["validators"].items():
        lines.append(f"| {v} | {f(d['spearman_pooled'])} | {f(d['spearman_within_run'])} | "
                     + " | ".join(f(d["selected_acc"][m], 100) for m in methods)
                     + f" | {f(d['mean_selected_acc'], 100)} | {f(d['gap_to_oracle'], 100)} |")
        base = {"benchmark": bench, "task": task, "selection": v, "std": None, "n_seeds": len(runs), "command": cmd}
        rows.append({**base, "method": "all", "metric": "spearman_pooled", "mean": d["spearman_pooled"]})
        rows.append({**base, "method": "all", "metric": "spearman_within_run", "mean": d["spearman_within_run"]})
        rows += [{**base, "method": m, "metric": "target_acc_selected", "mean": 100 * d["selected_acc"][m]}
                 for m in methods]
    lines += ["", "## Command", "", f"- sweep: `{cmd}`"]
    label_free = {v: d for v, d in s["validators"].items() if v not in ("oracle", "source_val")}
    top = max(label_free, key=lambda v: label_free[v]["mean_selected_acc"], default=None)
    headline = (f"{top} selects {100 * label_free[top]['mean_selected_acc']:.2f} on average (oracle "
                f"{100 * s['validators']['oracle']['mean_selected_acc']:.2f})" if top else "no validator scores")
    return "\n".join(lines) + "\n" + _tail(notes, provenance), Rendered(rows, headline)


from dacl.studies import analysis_tables, finetune_tables  # noqa: E402,F401  (register their renderers)
