"""A study's run archive (``<table>.runs.jsonl``, one run record per line) and which grid point each record is.

A record belongs to a grid point when its result-changing configuration (``dacl.run_spec.result_config``) equals
the one the point composes to *now*. A key added to dacl since the run was recorded is not compared (a new option
must default to the old behaviour); a removed key or a changed value (a corrected hyper-parameter, another
network) makes the record stale, and the run is re-made instead of keeping its old number.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dacl.engine.results import atomic_write_text
from dacl.errors import ConfigError
from dacl.reporting import processes
from dacl.run_spec import migrate_legacy, result_config

CONFIG_OF_COMMAND = {"run": "config", "continual": "continual"}
LAUNCH_KEYS = ("processes=",)  # grid keys that choose how a run is launched, not what it computes
NAME_KEY = {"run": ("method", "name"), "continual": ("strategy", "name")}
_HYDRA = threading.Lock()  # Hydra's compose state is global


def read_archive(path: Path) -> list[dict[str, Any]]:
    """Every record of an archive (a missing archive is empty); a damaged line is an error naming the file."""
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not a run record ({exc}); restore the file from git") from None
            problem = record_problem(record)
            if problem:
                raise ConfigError(f"{path}:{n} is not a run record ({problem}); restore the file from git")
            records.append(record)
    return records


def record_problem(record: Any) -> str | None:
    """Why a parsed archive line is not a run record (valid JSON is not enough), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("status"), str):
        return "no 'status'"
    if record["status"] == "ok" and not isinstance(record.get("metrics"), dict):
        return "a finished run without 'metrics'"
    return None


def write_archive(path: Path, records: list[dict[str, Any]]) -> None:
    """Sorted, one JSON object per line, written atomically: git diffs of an archive show only the new runs."""
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def compose_point(command: str, point: tuple[str, ...]) -> dict[str, Any]:
    """The resolved config a fresh ``dacl <command>`` run of ``point`` would use now."""
    if command == "measure":
        from dacl.studies.measure import compose

        return compose(point)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from dacl.cli import CONFIG_DIR, _register_resolvers, search_path_override

    _register_resolvers()
    with _HYDRA, initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(CONFIG_OF_COMMAND[command], overrides=[*point, *search_path_override()])
        except HydraException as exc:
            raise ConfigError(f"grid point {' '.join(point)} does not compose: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def differences(was: Any, now: Any, path: str = "") -> list[str]:
    """'a.b: old -> new' for every leaf that differs. A key the run recorded that no longer exists counts (its value
    may have mattered); a key added since does not (a new option must default to the old behaviour)."""
    if isinstance(was, dict) and isinstance(now, dict):
        gone = [f"{path}{k}: {was[k]} -> (option removed)" for k in sorted(set(was) - set(now), key=str)]
        return gone + [d for k in sorted(set(was) & set(now), key=str)
                       for d in differences(was[k], now[k], f"{path}{k}.")]
    return [] if was == now else [f"{path.rstrip('.')}: {was} -> {now}"]


@dataclass
class Point:
    """One grid point: its overrides, its composed config, and the archive record that holds its result."""

    overrides: tuple[str, ...]
    config: dict[str, Any]
    processes: int = 1  # torchrun processes (a grid's ``processes:`` key), not a config override
    record: dict[str, Any] | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    points: list[Point]
    stale: list[tuple[dict[str, Any], str]]   # records of this grid's runs whose config has changed since
    other: list[dict[str, Any]]               # records of no grid point (another grid shares the archive)

    @property
    def missing(self) -> list[Point]:
        return [p for p in self.points if p.record is None]


def _name_seed(command: str, config: dict[str, Any]) -> tuple[Any, Any]:
    if command == "measure":
        return config.get("measurement"), config.get("seed")
    section, key = NAME_KEY[command]
    return (config.get(section) or {}).get(key), config.get("seed")


def plan(command: str, points: list[tuple[str, ...]], records: list[dict[str, Any]]) -> Plan:
    """Match archive records to grid points. A point takes its newest successful matching record; failed records
    of a point without a success are kept on it (a table lists them)."""
    composed = []
    for p in points:
        launch = {o.partition("=")[0]: o.partition("=")[2] for o in p if o.startswith(LAUNCH_KEYS)}
        overrides = tuple(o for o in p if not o.startswith(LAUNCH_KEYS))
        composed.append(Point(overrides, result_config(compose_point(command, overrides), command),
                              processes=int(launch.get("processes", 1))))
    by_name: dict[tuple[Any, Any], list[Point]] = {}
    for pt in composed:
        by_name.setdefault((*_name_seed(command, pt.config), pt.processes), []).append(pt)
    stale, other = [], []
    for rec in sorted(records, key=lambda r: str(r.get("started_at") or "")):
        cfg = result_config(migrate_legacy(rec.get("config") or {}, command), command)
        candidates = by_name.get((*_name_seed(command, cfg), processes(rec)), [])
        reasons = [differences(cfg, pt.config) for pt in candidates]
        match = next((pt for pt, diff in zip(candidates, reasons) if not diff), None)
        if match is None:
            if candidates:
                stale.append((rec, "; ".join(min(reasons, key=len))))
            else:
                other.append(rec)
        elif rec.get("status") == "ok":
            match.record, match.failed = rec, []
        elif match.record is None:
            match.failed.append(rec)
    return Plan(composed, stale, other)
