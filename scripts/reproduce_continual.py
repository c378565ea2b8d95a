"""Reproduces paper_results/continual/<stream>.{md,csv}: van de Ven & Tolias 2019's three scenarios.

Every cell is a ``dacl continual`` run (the printed command reproduces it); finished runs are reused, so an
interrupted sweep resumes. Runs go to runs/<tag>/<stream>/<scenario>/<strategy>/seed<k>; ``--jobs`` runs
that many single-threaded processes side by side (2 on a 2-core machine). The run records behind each table
are written to <out>/<stream>.runs.jsonl: committed with the table, they count as finished cells in a fresh
clone too, so a sweep too long for one machine session is run in chunks (run folders are not versioned).

    python scripts/reproduce_continual.py --data-root ../shared/data --streams split_mnist --seeds 0,1,2 --jobs 2
Cost on 2 CPU cores (2 jobs): Split MNIST ~1.5-3 min per run, 54 runs ~1 h. Permuted MNIST (paper protocol:
10 tasks x 5,000 iterations, 2 x 1,000 units) is ~25 min per run on one core: run it on a GPU.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.engine.results import git_commit  # noqa: E402
from dacl.run_spec import result_config  # noqa: E402
from dacl.reporting import (COLUMNS, _fmt, archive_runs, atomic_write_text, commit_label, format_mean_std,  # noqa: E402
                            load_runs, mean_std, sweep_command, to_csv)

SCENARIOS = ("task", "domain", "class")


RUNS = REPO / "runs"  # --runs moves it (tests keep the repository's runs/ untouched)


def _shown(path: Path) -> str:
    """A run path as printed: relative to the repository where it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def run_dir(tag: str, stream: str, scenario: str, strategy: str, seed: int) -> Path:
    return RUNS / tag / stream / scenario / strategy / f"seed{seed}"


def archive_path(args: argparse.Namespace, stream: str) -> Path:
    return REPO / args.out / f"{stream}.runs.jsonl"


_HYDRA_LOCK = threading.Lock()  # Hydra's compose state is global; --jobs launches cells from several threads
EFFECTIVE_KEYS = ("strategy", "train", "model")  # with the stream minus its protocol: what a run actually used


def _effective(config: dict) -> dict:
    config = result_config(config, "continual")  # resume, checkpoint and log cadence never make a run stale
    stream = {k: v for k, v in config.get("stream", {}).items() if k != "protocol"}  # protocol feeds the keys above
    return {"stream": stream, **{k: config.get(k) for k in EFFECTIVE_KEYS}}


def current_config(stream: str, scenario: str, strategy: str, seed: int, overrides: list[str]) -> dict:
    """The resolved config a fresh ``dacl continual`` run of this cell would use now."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with _HYDRA_LOCK, initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("continual", overrides=[f"stream={stream}", f"scenario={scenario}", f"strategy={strategy}",
                                              f"seed={seed}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def stale_reason(record: dict, overrides: list[str]) -> str | None:
    """Why a finished run no longer matches the committed configs (e.g. a corrected EWC lambda), or None.
    A stale run is re-run and never enters a table, so a config fix cannot silently keep old numbers."""
    cfg = record.get("config", {})
    try:
        now = _effective(current_config(record["benchmark"], record["scenario"], record["method"], record["seed"], overrides))
    except Exception as exc:  # noqa: BLE001  (e.g. a strategy config since removed: the record cannot be current)
        return f"its cell no longer composes from configs/ ({type(exc).__name__}: {exc})"
    changes = _diff(_effective(cfg), now)
    return f"config changed since the run: {'; '.join(changes)}" if changes else None


def _diff(was: object, now: object, path: str = "") -> list[str]:
    """Leaf-level differences 'a.b: old -> new' between two resolved configs."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [d for k in sorted(set(was) | set(now), key=str) for d in _diff(was.get(k), now.get(k), f"{path}{k}.")]
    if isinstance(was, list) and isinstance(now, list) and len(was) == len(now):
        return [d for i, (a, b) in enumerate(zip(was, now)) for d in _diff(a, b, f"{path}{i}.")]
    return [] if was == now else [f"{path.rstrip('.')}: {was} -> {now}"]


def current_only(records: list[dict], overrides: list[str], where: str) -> list[dict]:
    keep = []
    for r in records:
        reason = stale_reason(r, overrides) if r.get("kind") == "continual" else None
        if reason:
            print(f"stale, will not be used ({where}): {r['scenario']} {r['method']} seed{r['seed']}: {reason}", flush=True)
        else:
            keep.append(r)
    return keep


def archived(args: argparse.Namespace, stream: str) -> dict[tuple, dict]:
    """Finished runs recorded in the committed archive, by cell (scenario, strategy, seed); stale ones dropped."""
    path = archive_path(args, stream)
    ok = load_runs([path])[0] if path.is_file() else []
    ok = current_only([r for r in ok if r.get("kind") == "continual"], args.overrides, str(path))
    return {(r["scenario"], r["method"], r["seed"]): r for r in ok}


def launch(args: argparse.Namespace, done: dict[tuple, dict], stream: str, scenario: str, strategy: str,
           seed: int) -> str:
    out = run_dir(args.tag, stream, scenario, strategy, seed)
    if not args.force and (out / "results.json").exists():
        reason = stale_reason(json.loads((out / "results.json").read_text()), args.overrides)
        if reason is None:
            return f"reused {_shown(out)}"
        print(f"re-running stale {_shown(out)}: {reason}", flush=True)
    if not args.force and (scenario, strategy, seed) in done.get(stream, {}):
        return f"reused {archive_path(args, stream)}: {stream} {scenario} {strategy} seed{seed}"
    cmd = [sys.executable, "-m", "dacl", "continual", f"stream={stream}", f"scenario={scenario}", f"strategy={strategy}",
           f"seed={seed}", f"tag={args.tag}", f"threads={args.threads}", *args.overrides, f"hydra.run.dir={out}"]
    if args.data_root:
        cmd.append(f"data_root={args.data_root}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return f"{'ok' if proc.returncode == 0 else 'FAILED'} {stream} {scenario} {strategy} seed{seed}: {tail[0]}"


def aggregate(results: list[dict], paper: dict) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["stream"], r["scenario"], r["method"]), []).append(r)
    rows = []
    order = {s: i for i, s in enumerate(SCENARIOS)}
    for (stream, scenario, method), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        seeds = [r["seed"] for r in runs]
        row = {"benchmark": stream, "task": scenario, "method": method, "selection": "final", "metric": "average_acc",
               "n_seeds": len(runs), "paper_value": paper.get(stream, {}).get(scenario, {}).get(method),
               "command": sweep_command([r.get("command") for r in runs], seeds)}
        for key, scale in (("average_accuracy", 100), ("bwt", 100), ("forgetting", 100), ("images_per_second", 1)):
            vals = [scale * r["metrics"][key] for r in runs if key in r["metrics"]]
            row[key] = mean_std(vals) if vals else None  # one seed: std None, shown as the value alone
        row["mean"], row["std"] = row["average_accuracy"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], failed: list[dict], title: str, notes: list[str]) -> str:
    pm = lambda v: "" if v is None else format_mean_std(*v)  # noqa: E731
    lines = [f"# {title}", "", "Average test accuracy (%) over all tasks after the last task (mean ± std over seeds; "
             "a cell with one seed shows its value alone), "
             "backward transfer and average forgetting (percentage points), training throughput (stream images/s, "
             "one CPU thread per run). The final model is evaluated: no selection, no test labels used.", "",
             "| scenario | method | avg acc | paper | BWT | forgetting | images/s | seeds |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ips = "" if r["images_per_second"] is None else f"{r['images_per_second'][0]:.0f}"
        lines.append(f"| {r['task']}-IL | {r['method']} | {pm(r['average_accuracy'])} | {_fmt(r['paper_value'])} | "
                     f"{pm(r['bwt'])} | {pm(r['forgetting'])} | {ips} | {r['n_seeds']} |")
    lines += ["", "## Commands", ""] + [f"- {r['task']}-IL {r['method']}: `{r['command']}`" for r in rows]
    if failed:
        lines += ["", "## Failed runs (not averaged)", ""] + [f"- `{f['run_dir']}`: {f['error']}" for f in failed]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    global RUNS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--streams", default="split_mnist")
    ap.add_argument("--scenarios", default="task,domain,class")
    ap.add_argument("--strategies", default="naive,joint,ewc,online_ewc,lwf,replay,si,agem")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="continual")
    ap.add_argument("--runs", default=str(RUNS), help="folder of the run folders (default: the repository's runs/)")
    ap.add_argument("--force", action="store_true", help="re-run cells that already have results.json")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--out", default="paper_results/continual")
    ap.add_argument("--notes-file", default="scripts/paper_values/continual_notes.md",
                    help="analysis notes (one '- ' bullet per line) appended to the table; every number in them must "
                         "come with the command that produced it")
    ap.add_argument("overrides", nargs="*", help="extra dacl continual overrides, e.g. train.steps_per_task=200")
    args = ap.parse_args()
    RUNS = Path(args.runs).resolve()
    commit = git_commit(REPO)  # before anything is written: the tables themselves would make the tree dirty
    streams, scenarios = args.streams.split(","), args.scenarios.split(",")
    strategies, seeds = args.strategies.split(","), [int(s) for s in args.seeds.split(",")]
    cells = [(st, sc, m, seed) for seed in seeds for st in streams for sc in scenarios for m in strategies]
    done = {stream: archived(args, stream) for stream in streams}
    if not args.collect_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for k, msg in enumerate(pool.map(lambda c: launch(args, done, *c), cells), 1):
                print(f"[{k}/{len(cells)}] {msg}", flush=True)
    paper = json.loads((REPO / "scripts/paper_values/continual.json").read_text())
    for stream in streams:
        runs_root = RUNS / args.tag / stream
        ok, failed = load_runs([runs_root]) if runs_root.is_dir() else ([], [])
        ok = current_only(ok, args.overrides, _shown(runs_root))
        fresh = {(r["scenario"], r["method"], r["seed"]) for r in ok if r.get("kind") == "continual"}
        ok += [r for cell, r in done[stream].items() if cell not in fresh]  # a run folder supersedes its archived record
        if ok or failed:  # every record, also of cells outside this invocation's table
            archive_runs(ok, failed, archive_path(args, stream))
        ok = [r for r in ok if r.get("kind") == "continual" and r["scenario"] in scenarios and r["method"] in strategies]
        rows = aggregate(ok, paper)
        hardware = Counter(json.dumps(r.get("hardware", {}), sort_keys=True) for r in ok)  # runs may span machines
        hw = "; ".join(f"{n} runs on {h}" for h, n in sorted(hardware.items(), key=lambda kv: -kv[1]))
        notes = [f"Protocol: {json.dumps(ok[0]['config']['train']) if ok else ''}; model {ok[0]['config']['model'] if ok else ''}.",
                 "Paper values: " + paper["_source"],
                 "Hyper-parameters (EWC lambda per scenario, lr, iterations, widths) are the authors' published ones "
                 "(configs/stream/*.yaml), not tuned here; replay keeps 2,000 examples (reservoir).",
                 "class-IL: only classes seen so far enter the softmax (the authors' protocol); task-IL: one head per task "
                 "(masked logits); domain-IL: one shared head over the within-task labels."]
        notes_path = REPO / args.notes_file
        if notes_path.is_file():
            notes += [line[2:].strip() for line in notes_path.read_text().splitlines()
                      if line.startswith("- ") and (f"[{stream}]" in line or "[all]" in line)]
        out = REPO / args.out / stream
        md = markdown(rows, failed, f"Continual learning: {stream} (van de Ven & Tolias 2019 protocol)", notes)
        md += f"\n## Provenance\n\n- generated by: `python scripts/reproduce_continual.py {shlex.join(sys.argv[1:])}`\n" \
              f"- runs' commits: {sorted({commit_label(r, width=40) for r in ok})}\n" \
              f"- collector commit: {commit['commit']} (dirty: {commit['dirty']})\n- hardware (per run record): {hw}\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out.with_suffix(".csv"), to_csv([{k: r.get(k) for k in COLUMNS} for r in rows]))
        atomic_write_text(out.with_suffix(".md"), md)
        print(f"wrote {out.with_suffix('.md')} ({len(rows)} rows, {len(failed)} failed)")


if __name__ == "__main__":
    main()
