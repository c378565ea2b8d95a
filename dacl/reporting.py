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
import shlex
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from dacl.engine.results import atomic_write_text
from dacl.run_spec import non_result_overrides
from dacl.engine.run_folder import folder_status

COLUMNS = ["benchmark", "task", "method", "selection", "metric", "mean", "std", "n_seeds", "paper_value", "command",
           "n_failed"]
SELECTIONS = ("last", "source_val", "oracle")  # the fixed protocols; validator columns sit between source_val and oracle
# Overrides that cannot change a result plus those already in the row's own columns (dacl.run_spec; mirrored by
# configs/config.yaml's override_dirname.exclude_keys). Any other override separates configurations.
NON_RESULT_KEYS = non_result_overrides("run")


def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample std over seeds. The std is None for a single value: one run measures no spread, and a
    printed "± 0.00" would read as a measured zero. NaN mean (and std) for no values."""
    vals = list(values)
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


# The LoRA paper's shape for parameter-efficient fine-tuning (Hu et al. 2021, RoBERTa-base GLUE: LoRA, adapters and
# BitFit within ~1-2 points of full fine-tuning while training a small fraction of the weights), as a checkable rule.
PEFT_MAX_POINTS_BELOW_FULL = 2.0  # accuracy points a method may fall below full fine-tuning
PEFT_MAX_TRAINABLE_PERCENT = 2.0  # share of the model's parameters it may train


def peft_shape_misses(gaps: dict[str, float], trainable_percent: float | None) -> list[str]:
    """Which parts of the LoRA paper's shape a method misses: the names of the ``gaps`` (method minus full
    fine-tuning, in points) below ``-PEFT_MAX_POINTS_BELOW_FULL``, then "parameters" when it trains
    ``PEFT_MAX_TRAINABLE_PERCENT`` % or more (or the share is unknown). Empty = it meets the shape."""
    misses = [name for name, gap in gaps.items() if not gap >= -PEFT_MAX_POINTS_BELOW_FULL]  # NaN gap misses
    return misses + ([] if trainable_percent is not None and trainable_percent < PEFT_MAX_TRAINABLE_PERCENT
                     else ["parameters"])


def format_mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``"81.11 ± 1.23"``, or the mean alone where there is no spread to show (one seed); "" for no value."""
    if mean is None or math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def commit_label(record: dict[str, Any], width: int = 12) -> str:
    """``abc123456789``, or ``abc123456789 (dirty: table.md)`` naming the changed files when the run recorded them
    (``git_commit``'s dirty_paths), so a reader tells changed code from a table rewritten beside the run."""
    sha = (record.get("commit") or "?")[:width]
    if not record.get("dirty"):
        return sha
    paths = record.get("dirty_paths")
    return f"{sha} (dirty: {', '.join(paths)})" if paths else f"{sha} (dirty)"


TASK_KEYS = ("benchmark.source", "benchmark.target")  # overrides the task column already names: never in a row label


def config_key(command: str | None) -> tuple[str, ...]:
    """The result-changing overrides of a run's command, sorted: runs differing only in seed share a key."""
    if not command:
        return ()
    words = shlex.split(command)
    if words[0] == "torchrun":  # torchrun [launcher options] -m dacl <command> overrides...
        words = words[words.index("dacl"):] if "dacl" in words else words
    keep = []
    for w in words[2:]:
        key, sep, _ = w.lstrip("+~").partition("=")
        if sep and key not in NON_RESULT_KEYS and not key.startswith("hydra"):
            keep.append(w.lstrip("+"))
    return tuple(sorted(keep))


def processes(result: dict[str, Any]) -> int:
    """How many torchrun processes trained the run (1 for plain runs and results written before DDP existed)."""
    hw = result.get("hardware")
    return int(hw.get("processes", 1)) if isinstance(hw, dict) else 1


def _label(method: str, variant: Any, processes: Any = 1) -> str:
    label = f"{method} [{variant}]" if variant else method
    return f"{label} ({processes} processes)" if processes and int(processes) > 1 else label


def _failed_record(run_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    if "config" not in info and "method" in info:  # already flat: a record written by archive_runs
        return {"run_dir": str(run_dir), "error": info.get("error", "unknown"),
                **{k: info.get(k) for k in ("command", "benchmark", "method", "variant")}}
    cfg = info.get("config") or {}
    return {"run_dir": str(run_dir), "error": info.get("error", "unknown"), "command": info.get("command"),
            "benchmark": (cfg.get("benchmark") or {}).get("name"), "method": (cfg.get("method") or {}).get("name"),
            "variant": cfg.get("variant") or (f"hp{cfg['hparams_seed']}" if cfg.get("hparams_seed") else None)}


# Files that mark a folder as a run's: any folder holding one is reported, with the status ``folder_status`` gives it.
RUN_MARKERS = ("results.json", "failed.json", "running.json", "train_log.csv", "checkpoint.pt", ".dacl.lock", ".hydra")


def load_runs(roots: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(successful results, failed runs) found below ``roots``: run folders, and append-only ``results.jsonl`` logs
    (one run record per line; the last line for a run folder wins). In a folder the newest of results.json /
    failed.json / running.json decides; a run folder with none of them is ``incomplete``. Unreadable or truncated
    files count as failed, never as results; every run that is not a result is listed and counted. A root may also be a run-record file written by
    ``archive_runs``; for the same run folder, a later root's record supersedes an earlier one's."""
    ok: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no run folder or run-record file '{root}'; check the path (runs live in runs/<tag>)")
        logs = [root] if root.is_file() else sorted(root.rglob("results.jsonl"))  # a file: an archive_runs record
        for path in logs:
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:  # a line cut short by a crash
                    failed[f"{path}:{n}"] = {"run_dir": f"{path}:{n}", "error": f"unreadable line: {exc}"}
                    continue
                key = rec.get("run_dir") or f"{path}:{n}"
                ok.pop(key, None)
                failed.pop(key, None)
                if rec.get("status") == "ok":
                    ok[key] = {**rec, "run_dir": key}
                else:
                    failed[key] = _failed_record(Path(key), rec)
        if root.is_file():
            continue
        for folder in sorted({p.parent for marker in RUN_MARKERS for p in root.rglob(marker)}):
            status, rec = folder_status(folder)
            if status == "ok":
                ok[str(folder)] = {**rec, "run_dir": str(folder)}
            else:  # failed, interrupted, running (or killed), incomplete: listed and counted, never averaged
                failed[str(folder)] = _failed_record(folder, {**rec, "error": f"[{status}] {rec.get('error', 'unknown')}"})
    return list(ok.values()), list(failed.values())


def archive_runs(ok: list[dict[str, Any]], failed: list[dict[str, Any]], path: str | Path) -> None:
    """Write every run record behind a table to one JSON-lines file, committed beside the table.

    Run folders (``runs/``) are not versioned and do not outlive a machine; with this file a table can be
    re-collected, audited, or extended with new runs later: ``dacl collect <table>.runs.jsonl runs/<new>``.
    """
    lines = [json.dumps({**r, "status": "ok"}, sort_keys=True, default=str) for r in ok]
    lines += [json.dumps({**r, "status": "failed"}, sort_keys=True, default=str) for r in failed]
    atomic_write_text(path, "".join(line + "\n" for line in sorted(lines)))


def sweep_command(commands: list[str | None], seeds: list[int], axes: dict[str, list[Any]] | None = None) -> str:
    """One multirun command covering all seeds of a row (``seed=0`` -> ``-m ... seed=0,1,2``).

    ``axes`` widens other overrides the same way (``{"method": ["dann", "cdan"]}`` -> ``method=cdan,dann``), so a
    table pooled over a sweep (the validator study) prints the command of the whole sweep, not of its first run.
    """
    cmd = next((c for c in commands if c), None)
    if cmd is None:
        return ""
    multirun = len(set(seeds)) > 1
    for key, values in {"seed": seeds, **(axes or {})}.items():
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
        joined = ",".join(str(v) for v in distinct)
        pattern = rf"(?<![\w.+]){re.escape(key)}=\S+"
        if re.search(pattern, cmd):
            cmd = re.sub(pattern, f"{key}={joined}", cmd)
        elif distinct != [0] or key != "hparams_seed":  # an absent hparams_seed is the default 0
            cmd += f" {key}={joined}"
        multirun = multirun or len(distinct) > 1
    cmd = re.sub(r"\s+hydra\.run\.dir=\S+", "", cmd)  # where one run was put never changes what it computes
    if multirun:
        if not re.search(r"\bdacl (run|continual) -m ", cmd):
            cmd = re.sub(r"\bdacl (run|continual) ", r"dacl \1 -m ", cmd, count=1)
    return cmd


def selection_order(results: list[dict[str, Any]]) -> tuple[str, ...]:
    """Every protocol present: last, source_val, then label-free validators (alphabetical), then oracle."""
    present = {p for r in results for p in r["metrics"]["target_test_acc"]}
    middle = sorted(present - set(SELECTIONS))
    return tuple(p for p in ("last", "source_val", *middle, "oracle") if p in present)


def aggregate(results: list[dict[str, Any]], paper_values: dict[str, dict[str, float]] | None = None,
              selections: tuple[str, ...] | None = None,
              failed: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Mean/std over seeds of target accuracy (%) per (benchmark, task, method, configuration, selection).

    Runs of one method that differ in a result-changing override (``trainer.lr=...``) are separate rows, labelled
    with the overrides that tell them apart. ``failed`` runs are matched to their row (``n_failed``); a
    configuration whose every run failed still gets rows, with no mean, so a table never hides a failure."""
    paper_values = paper_values or {}
    selections = selections or selection_order(results)
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        label = _label(r["method"], r.get("variant"), processes(r))
        groups[(r["benchmark"], r["task"], label, config_key(r.get("command")))].append(r)
    configs_of: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
    for bench, _, label, key in groups:
        configs_of[(bench, label)].add(key)
    n_failed: dict[tuple[str, str, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
    for f in failed or []:  # a run whose config could not be read still counts, under its own row
        bench, method = f.get("benchmark") or "?", f.get("method") or "(unidentified run)"
        n_failed[(bench, _label(method, f.get("variant")), config_key(f.get("command")))].append(f)

    def shown(bench: str, label: str, key: tuple[str, ...]) -> str:
        keys = configs_of[(bench, label)] | {k for b, lab, k in n_failed if (b, lab) == (bench, label)}
        common = set.intersection(*(set(k) for k in keys)) if keys else set()
        extra = [o for o in key if o not in common and o.partition("=")[0] not in TASK_KEYS]
        return f"{label} {{{', '.join(extra)}}}" if extra else label

    rows = []
    for (bench, task, label, key), runs in sorted(groups.items()):
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicate seeds {sorted(seeds)} for {bench}/{label} {key}: collect one run directory per seed")
        fails = n_failed.pop((bench, label, key), [])
        for sel in selections:
            vals = [100.0 * r["metrics"]["target_test_acc"][sel] for r in runs if sel in r["metrics"]["target_test_acc"]]
            if not vals:
                continue
            mean, std = mean_std(vals)
            rows.append({
                "benchmark": bench, "task": task, "method": shown(bench, label, key), "selection": sel,
                "metric": "target_acc", "mean": mean, "std": std, "n_seeds": len(vals),
                "paper_value": paper_values.get(bench, {}).get(runs[0]["method"]),
                "command": sweep_command([r.get("command") for r in runs], seeds), "n_failed": len(fails),
            })
    for (bench, label, key), fails in sorted(n_failed.items()):  # configurations with no successful run at all
        for sel in selections:
            rows.append({"benchmark": bench, "task": "", "method": shown(bench, label, key), "selection": sel,
                         "metric": "target_acc", "mean": float("nan"), "std": float("nan"), "n_seeds": 0,
                         "paper_value": paper_values.get(bench, {}).get(fails[0].get("method")),
                         "command": fails[0].get("command") or "", "n_failed": len(fails)})
    return rows


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_csv(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> str:
    """The paper-table CSV: ``columns`` (the standard ones, or a superset a script adds), floats to 2 decimals."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], failed: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    """A compact wide table (one column per selection protocol) plus the commands and failures."""
    protocols = list(dict.fromkeys(r["selection"] for r in rows))
    wide: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        w = wide.setdefault((r["task"], r["method"]), {"paper": r["paper_value"], "n": r["n_seeds"], "cmd": r["command"],
                                                        "failed": r["n_failed"]})
        w[r["selection"]] = "failed" if r["n_seeds"] == 0 else format_mean_std(r["mean"], r["std"])
    validators = [p for p in protocols if p not in SELECTIONS]
    lines = [f"# {title}", "", "Target test accuracy (%), mean ± std over seeds (a cell with one seed shows its value alone). Selection protocols: `last` = final step; "
             "`source_val` = step with best held-out source accuracy (no target labels); "
             + (f"{', '.join(f'`{v}`' for v in validators)} = step with the best label-free validator score "
                "(dacl/validators); " if validators else "")
             + "`oracle` = best target test accuracy (uses target labels: an upper bound, not a result). "
             "`failed` counts runs of the configuration that crashed (listed below, never averaged).", "",
             "| task | method | " + " | ".join(protocols) + " | paper | seeds | failed |",
             "|---|---|" + "---|" * (len(protocols) + 3)]
    for (task, method), w in wide.items():
        cells = " | ".join(w.get(p, "") for p in protocols)
        lines.append(f"| {task} | {method} | {cells} | {_fmt(w['paper'])} | {w['n']} | {w['failed'] or ''} |")
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


def select_variants(runs: list[dict[str, Any]], keep: str | None, drop: str | None) -> list[dict[str, Any]]:
    """The runs whose variant is in ``keep`` (comma-separated, 'none' = no variant; None keeps all) and not in ``drop``."""
    def name(r: dict[str, Any]) -> str:
        return r.get("variant") or "none"
    kept = [r for r in runs if keep is None or name(r) in keep.split(",")]
    return [r for r in kept if drop is None or name(r) not in drop.split(",")]


def hardware_summary(ok: list[dict[str, Any]]) -> str:
    """'N runs on <device / cpu / threads>' per distinct machine, most runs first."""
    def label(r: dict[str, Any]) -> str:
        hw = r.get("hardware") or {}
        return f"{hw.get('device')} / {hw.get('gpu') or hw.get('cpu')} / {hw.get('torch_threads')} thread(s)"
    counts = Counter(label(r) for r in ok)
    return "; ".join(f"{n} runs on {h}" for h, n in counts.most_common())


def commits_summary(ok: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({commit_label(r) for r in ok}))


def collect_runs(roots: list[str], out: str | Path, title: str, notes: list[str], command: str,
                 variants: str | None = None, drop_variants: str | None = None) -> Path:
    """Any sweep's run folders (or run-record files) -> ``out``.md/.csv/.runs.jsonl: ``dacl collect``, for runs that
    belong to no study. Committed tables are made by ``dacl reproduce <study>`` instead."""
    from dacl.errors import ConfigError

    try:
        ok, failed = load_runs(roots)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if not ok and not failed:
        raise ConfigError(f"no results.json or failed.json under {roots}; run the experiments first")
    if variants or drop_variants:
        ok, failed = select_variants(ok, variants, drop_variants), select_variants(failed, variants, drop_variants)
        if not ok and not failed:
            raise ConfigError(f"no run under {roots} has a variant in --variants {variants!r} (and outside "
                              f"--drop-variants {drop_variants!r}); check the names (the `variant:` of the experiment)")
    rows = aggregate(ok, failed=failed)
    provenance = {"commits": commits_summary(ok), "hardware": hardware_summary(ok),
                  "runs": len(ok), "failed runs": len(failed), "collected with": f"`{command}`"}
    write_tables(rows, failed, out, title, notes, provenance)
    archive_runs(ok, failed, Path(out).with_suffix(".runs.jsonl"))
    return Path(out).with_suffix(".md")
