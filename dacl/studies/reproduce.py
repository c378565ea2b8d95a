"""``dacl reproduce <study>``: run what a study's archive lacks, then re-make its table from the archive.

Every finished run is appended to ``<table>.runs.jsonl`` the moment it ends, so a sweep too long for one sitting
continues where the last chunk stopped (the archive is committed; run folders are not). ``--collect-only``
trains nothing. ``--quick`` runs the whole grid with the study's short overrides into a scratch folder: a smoke
test of the pipeline whose numbers never enter a committed table.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dacl.engine.results import atomic_write_text
from dacl.engine.run_folder import folder_status
from dacl.errors import ConfigError
from dacl.reporting import _failed_record, commits_summary, hardware_summary
from dacl.run_spec import classify
from dacl.studies.spec import REPO, Study, all_studies, load_study
from dacl.studies.store import Plan, Point, plan, read_archive, write_archive
from dacl.studies.tables import RENDERERS, render

RESUME_KEY = "trainer.resume=true"


@dataclass
class Options:
    collect_only: bool = False
    quick: bool = False
    jobs: int = 1
    out: Path | None = None          # folder for the table (default: where the study commits it)
    data_root: str | None = None
    runs: Path = REPO / "runs"       # parent of the run folders
    extra: tuple[str, ...] = ()      # runtime overrides for every run (e.g. trainer.device=cuda)
    launcher: str | None = None      # a Hydra launcher (e.g. submitit_slurm): each run is a one-job multirun through it
    echo: Callable[[str], None] = lambda line: print(line, flush=True)


def archive_path(study: Study) -> Path:
    return REPO / f"{load_study(study.archive_study).table if study.runs_of else study.table}.runs.jsonl"


def table_prefix(study: Study, opts: Options) -> Path:
    if opts.out is not None:
        return opts.out / Path(study.table).name
    if opts.quick:
        return opts.runs / "quick" / study.name / Path(study.table).name
    return REPO / study.table


def point_folder(study: Study, point: Point, opts: Options) -> Path:
    """A stable folder per grid point: readable, and unique through a digest of the overrides."""
    words = " ".join(point.overrides) + (f" processes={point.processes}" if point.processes > 1 else "")
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(o.split("=")[-1] for o in point.overrides))[:80]
    digest = hashlib.sha1(words.encode()).hexdigest()[:8]
    return opts.runs / "study" / (f"quick_{study.name}" if opts.quick else study.name) / f"{slug}_{digest}"


def _grid(study: Study, opts: Options) -> list[tuple[str, ...]]:
    points = study.points() if not study.runs_of else load_study(study.runs_of).points()
    return [(*(_quick_pretraining(o, study.quick) for o in p), *study.quick) for p in points] if opts.quick else points


def _quick_pretraining(override: str, quick: tuple[str, ...]) -> str:
    """--quick shortens every run a point trains: its pre-training run (``pretrain.overrides=[...]``) as well."""
    key, _, value = override.partition("=")
    if key != "pretrain.overrides" or value.strip() in ("[]", "") or not quick:
        return override
    return f"{key}={value.rstrip()[:-1]}," + ",".join(f"'{q}'" for q in quick) + "]"


def _record_of(folder: Path) -> dict[str, Any] | None:
    status, rec = folder_status(folder)
    if status == "ok":
        return {**rec, "status": "ok", "run_dir": str(folder)}
    if status in ("failed", "interrupted"):
        return {**rec, "status": status, "run_dir": str(folder)}
    return None


def _launch(study: Study, point: Point, opts: Options) -> dict[str, Any] | None:
    """Run one grid point as its own ``dacl`` process (resuming its checkpoint if a previous chunk left one)."""
    folder = point_folder(study, point, opts)
    done = _record_of(folder)
    if done is not None and done["status"] == "ok":
        return done
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(point.processes)] if point.processes > 1 else [sys.executable]
    multirun, where = ([], [f"hydra.run.dir={folder}"]) if opts.launcher is None else \
        (["-m"], [f"hydra/launcher={opts.launcher}", f"hydra.sweep.dir={folder}", "hydra.sweep.subdir=."])
    # test-time methods adapt, and fine-tuning baselines start from, one shared run per configuration
    shared = [f"tta.source_runs={opts.runs / 'source_models'}", f"pretrain.runs={opts.runs / 'pretrain'}"] \
        if study.command == "run" else []
    if study.command == "measure":  # a measurement is short: it starts over rather than resume
        multirun, shared, where = [], [], ["--out", str(folder)]
    cmd = [*launcher, "-m", "dacl", study.command, *multirun, *point.overrides, *study.runtime, *opts.extra, *shared,
           *([RESUME_KEY] if study.command != "measure" else []), *where]
    if opts.data_root:
        cmd.append(f"data_root={opts.data_root}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    record = _record_of(folder)
    if record is None:  # the run could not even start (bad data path, ...): say why, record nothing
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        opts.echo(f"  did not start: {shell_words(point.overrides)}: {tail[0]}")
    return record


def launch_order(points: list[Point]) -> list[Point]:
    """The order side-by-side workers take runs in: one run of each seed first, then each seed's other runs
    together, seeds in grid order. A seed's runs share its source model or pre-training run, trained by the first
    run that needs it while the others wait on its lock; in grid order (method by method) a second worker would
    wait on that lock with runs of a finished seed still to do."""
    first: dict[Any, Point] = {}
    for point in points:
        first.setdefault(point.config.get("seed"), point)
    seeds = list(first)
    rest = [p for p in points if all(p is not f for f in first.values())]
    return [*first.values(), *sorted(rest, key=lambda p: seeds.index(p.config.get("seed")))]


def run_missing(study: Study, todo: list[Point], archive: Path, opts: Options) -> None:
    """Run the grid points without a record, ``opts.jobs`` at a time; each record reaches the archive at once."""
    lock = threading.Lock()
    if opts.jobs > 1:
        todo = launch_order(todo)

    def one(point: Point) -> str:
        record = _launch(study, point, opts)
        if record is None:
            return "not started"
        with lock:
            write_archive(archive, [*read_archive(archive), record])
        return record["status"]

    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        for k, (point, status) in enumerate(zip(todo, pool.map(one, todo)), 1):
            opts.echo(f"[{k}/{len(todo)}] {status}: {point_command(study, point)}")


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def point_command(study: Study, point: Point) -> str:
    """The ``dacl`` command that makes this grid point's run (what a table's command column shows)."""
    data = ["data_root=../shared/data"] if study.needs_data else []
    launcher = f"torchrun --nproc_per_node {point.processes} -m dacl" if point.processes > 1 else "dacl"
    return f"{launcher} {study.command} " + shell_words([*point.overrides, *study.runtime, *data])


def shell_words(words: list[str] | tuple[str, ...]) -> str:
    """Words a shell reads back as they are: a word holding single quotes (a list of quoted overrides) goes in double
    quotes when nothing in it expands there, which reads far better than shlex's '"'"' escapes."""
    safe = re.compile(r"""[^"$`\\!]*""")
    return " ".join(f'"{w}"' if "'" in w and safe.fullmatch(w) else shlex.quote(w) for w in words)


def _keep_variant(study: Study, record: dict[str, Any]) -> bool:
    return study.variants is None or (record.get("variant") or "none") in study.variants


def collect(study: Study, grid: Plan, out: Path | None, command: str) -> str:
    """Render the table from the records matched to grid points (written to ``out`` unless None); what is missing
    or stale is said in the notes. Returns the table's headline."""
    ok = [{**p.record, "command": point_command(study, p)} for p in grid.points
          if p.record is not None and _keep_variant(study, p.record)]
    failed = [_failed_record(Path(f.get("run_dir", "?")), f) for p in grid.points if p.record is None
              for f in p.failed[-1:] if _keep_variant(study, f)]
    notes = list(study.notes) + study.paper_notes()
    missing = [p for p in grid.missing if not p.failed]
    if missing:
        notes.append(f"{len(missing)} of {len(grid.points)} runs of the grid have no record yet; "
                     f"`dacl reproduce {study.name}` runs them (finished runs are kept).")
    if grid.stale:
        notes.append(f"{len(grid.stale)} archived runs are not shown: their configuration differs from the grid's "
                     f"as it is now (e.g. {grid.stale[0][1]}).")
    provenance = [f"made by: `{command}`", f"runs: {len(ok)}; failed runs: {len(failed)}",
                  f"runs' commits: {commits_summary(ok)}", f"hardware: {hardware_summary(ok)}",
                  f"run records: `{_shown(archive_path(study))}`"]
    return render(study, ok, failed, out, notes, provenance).headline


def reproduce(name: str, opts: Options) -> Path:
    """Run (unless collect-only) and re-make one study's table; returns the table's Markdown path."""
    study = load_study(name)
    if study.kind not in RENDERERS:
        raise ConfigError(f"{study.source}: unknown kind '{study.kind}'; kinds: {', '.join(RENDERERS)}")
    for item in opts.extra:
        key = item.partition("=")[0]
        if not key.startswith("hydra.") and classify(key, study.command) != "runtime":
            raise ConfigError(f"'{item}' could change a result; the grid lives in {study.source.relative_to(REPO)}. "
                              "Extra overrides may only be runtime ones (threads, device, paths)")
    archive = archive_path(study)
    out = table_prefix(study, opts)
    work_archive = out.with_suffix(".runs.jsonl") if opts.quick else archive
    command = " ".join(["dacl reproduce", name, *(["--quick"] if opts.quick else []),
                        *([f"--data-root {opts.data_root}"] if opts.data_root else [])])
    grid = plan(study.command, _grid(study, opts), read_archive(work_archive))
    if not opts.collect_only and grid.missing:
        if study.runs_of:
            raise ConfigError(f"study {name} shows the runs of study {study.runs_of}: run `dacl reproduce "
                              f"{study.runs_of}` first ({len(grid.missing)} runs missing)")
        opts.echo(f"{name}: {len(grid.missing)} of {len(grid.points)} runs to go ({opts.jobs} at a time)")
        run_missing(study, grid.missing, work_archive, opts)
        grid = plan(study.command, _grid(study, opts), read_archive(work_archive))
    elif not grid.stale and not any(p.record is not None or p.failed for p in grid.points):
        opts.echo(f"{name}: no run records yet, no table written; `dacl reproduce {name}` runs its "
                  f"{len(grid.points)} runs")
        return out.with_suffix(".md")
    elif opts.out is not None and not opts.quick:  # a rebuilt table carries its records beside it
        write_archive(out.with_suffix(".runs.jsonl"), read_archive(archive))
    headline = collect(study, grid, out, command)
    opts.echo(f"wrote {out.with_suffix('.md')}: {headline}")
    if opts.out is None and not opts.quick and out.is_relative_to(REPO / "paper_results"):
        write_index()
    return out.with_suffix(".md")


def reproduce_all(opts: Options) -> list[str]:
    """Every study in turn (``dacl reproduce --all``); studies that need the shared data are skipped, said so, when
    it is absent. Returns the names of the studies that failed."""
    data = Path(opts.data_root or REPO.parent / "shared" / "data")
    failed = []
    for study in all_studies():
        if study.needs_data and not (data / "mnist.npz").is_file():
            opts.echo(f"== {study.name}: skipped, {data} has no benchmark files (pass --data-root)")
            continue
        opts.echo(f"== {study.name}")
        try:
            reproduce(study.name, opts)
        except ConfigError as exc:
            opts.echo(f"   failed: {exc}")
            failed.append(study.name)
    return failed


def headline_of(study: Study) -> str:
    """The committed table's headline, re-computed from its committed records."""
    grid = plan(study.command, _grid(study, Options()), read_archive(archive_path(study)))
    if all(p.record is None for p in grid.points):
        if not (REPO / f"{study.table}.md").is_file():
            return (f"not run yet ({len(grid.points)} runs); the published values it compares with are in its study "
                    "file")
        return (f"no run records yet: the committed table predates them; `dacl reproduce {study.name}` runs its "
                f"{len(grid.points)} runs")
    return collect(study, grid, None, "")


def list_studies(echo: Callable[[str], None] = print) -> None:
    for s in all_studies():
        made = f"{len(s.points()) if not s.runs_of else 'runs of ' + s.runs_of}"
        echo(f"{s.name:<34} {s.table}.md  [{s.kind}; runs: {made}{'; needs ../shared/data' if s.needs_data else ''}]")
        echo(f"{'':<34} {s.title}")


def write_index(path: Path = REPO / "paper_results" / "README.md") -> None:
    """paper_results/README.md: every table, its headline (re-computed from its records) and its command."""
    lines = ["# Results", "", "Every table below is made by `dacl reproduce <study>` from the study file "
             "`configs/study/<study>.yaml` (its grid of runs, paper values with their sources, notes). Tables of "
             "grid studies are re-made from their committed run records with `dacl reproduce <study> "
             "--collect-only`; `dacl reproduce --list` lists them. This index is generated; do not edit it.", "",
             "| study | table | headline | command |", "|---|---|---|---|"]
    for s in all_studies():
        table = Path(s.table).relative_to("paper_results") if s.table.startswith("paper_results/") else Path(s.table)
        headline = headline_of(s)
        made = (REPO / f"{s.table}.md").is_file()
        source = s.source.resolve()
        where = f"../{source.relative_to(REPO)}" if source.is_relative_to(REPO) else str(source)
        link = f"[{s.title}]({table}.md)" if made else f"{s.title} ([study file]({where}))"
        lines.append(f"| {s.name} | {link} | {headline} | `dacl reproduce {s.name}` |")
    atomic_write_text(path, "\n".join(lines) + "\n")
