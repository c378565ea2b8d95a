"""A study is the data behind one committed table: the grid of runs, the table's layout, the paper values (each
with its source and whether our protocol matches) and the notes. It lives in ``configs/study/<name>.yaml`` so a
table is re-made by ``dacl reproduce <name>``, never by a script holding its own loop, cache or renderer.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dacl.errors import ConfigError
from dacl.registry import did_you_mean

REPO = Path(__file__).resolve().parents[2]
STUDY_DIR = Path(os.environ.get("DACL_STUDY_DIR", REPO / "configs" / "study"))
STUDY_KEYS = {"title", "table", "kind", "command", "grid", "runtime", "quick", "runs_of", "variants", "paper", "notes",
              "needs_data"}


@dataclass(frozen=True)
class PaperValue:
    """A published number beside a row: where it comes from and whether its protocol is ours (``matches``, or
    ``differs: <how>``), so a reader never compares unlike with like without being told."""

    benchmark: str
    method: str
    value: float
    source: str
    protocol: str
    task: str | None = None  # continual tables: the scenario


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    table: str                       # output prefix inside the repository: <table>.md, .csv, .runs.jsonl
    kind: str                        # the renderer (dacl.studies.tables.RENDERERS)
    command: str = "run"             # the dacl command each grid point runs: run | continual | measure
    grid: tuple[dict[str, Any], ...] = ()
    runtime: tuple[str, ...] = ()    # overrides that cannot change a result (threads), added to every run
    quick: tuple[str, ...] = ()      # overrides for --quick: the grid end to end in minutes, into a scratch folder
    runs_of: str | None = None       # another study whose archive holds this table's runs
    variants: tuple[str, ...] | None = None  # keep only runs of these variants ("none": runs without one)
    paper: tuple[PaperValue, ...] = ()
    notes: tuple[str, ...] = ()
    needs_data: bool = False         # reads ../shared/data (or data_root); offline studies run anywhere
    source: Path = field(default=Path(), compare=False)

    @property
    def archive_study(self) -> str:
        return self.runs_of or self.name

    def points(self) -> list[tuple[str, ...]]:
        """Every run of the grid as its override list: each grid entry is a product over its list values."""
        out: list[tuple[str, ...]] = []
        for entry in self.grid:
            values = [v if isinstance(v, list) else [v] for v in entry.values()]
            for combo in itertools.product(*values):
                point = tuple(f"{k}={_override_value(v)}" for k, v in zip(entry, combo))
                if point not in out:
                    out.append(point)
        return out

    def paper_lookup(self) -> dict[str, dict[str, Any]]:
        """{benchmark: {method: value}} (continual: {stream: {scenario: {method: value}}}), what renderers read."""
        out: dict[str, Any] = {}
        for p in self.paper:
            node = out.setdefault(p.benchmark, {})
            if p.task is not None:
                node = node.setdefault(p.task, {})
            node[p.method] = p.value
        return out

    def paper_notes(self) -> list[str]:
        """One note per (source, protocol): which values it gives and whether our protocol matches."""
        groups: dict[tuple[str, str], list[str]] = {}
        for p in self.paper:
            where = " ".join(x for x in (p.benchmark, p.task, p.method) if x)
            groups.setdefault((p.source, p.protocol), []).append(f"{where} {p.value:g}")
        return [f"Paper values {', '.join(vals)}: {src}. Protocol {proto}." for (src, proto), vals in groups.items()]


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def study_names(folder: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (folder or STUDY_DIR).glob("*.yaml"))


def load_study(name: str, folder: Path | None = None) -> Study:
    """Read and check ``configs/study/<name>.yaml``; every mistake is one ConfigError naming the fix."""
    folder = folder or STUDY_DIR
    path = folder / f"{name}.yaml"
    if not path.is_file():
        names = study_names(folder)
        raise ConfigError(f"unknown study '{name}'.{did_you_mean(name, names)} Studies: {', '.join(names)} "
                          "(`dacl reproduce --list`)")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - STUDY_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a study takes {sorted(STUDY_KEYS)}")
    for key in ("title", "table", "kind"):
        if not raw.get(key):
            raise ConfigError(f"{path}: '{key}' is required")
    if not (raw.get("grid") or raw.get("runs_of")):
        raise ConfigError(f"{path}: give the runs in 'grid' (or 'runs_of: <study>' to share another study's runs)")
    try:
        paper = tuple(PaperValue(**p) for p in raw.get("paper") or [])
    except TypeError as exc:
        raise ConfigError(f"{path}: a paper value needs benchmark, method, value, source, protocol "
                          f"(task optional): {exc}") from None
    bad = [p for p in paper if not p.protocol.startswith(("matches", "differs"))]
    if bad:
        raise ConfigError(f"{path}: a paper value's protocol starts with 'matches' or 'differs: <how>', not {bad[0].protocol!r}")
    variants = raw.get("variants")
    return Study(name=name, title=raw["title"], table=raw["table"], kind=raw["kind"], command=raw.get("command", "run"),
                 grid=tuple(raw.get("grid") or ()), runtime=tuple(raw.get("runtime") or ()),
                 quick=tuple(raw.get("quick") or ()), runs_of=raw.get("runs_of"),
                 variants=tuple(variants) if variants else None, paper=paper, notes=tuple(raw.get("notes") or ()),
                 needs_data=bool(raw.get("needs_data", False)), source=path)


def all_studies(folder: Path | None = None) -> list[Study]:
    return [load_study(n, folder) for n in study_names(folder)]
