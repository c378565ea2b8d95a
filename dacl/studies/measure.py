"""Measurements: runs that are not one training configuration (a framework comparison, a throughput probe) but
still leave the one run record, in a run folder, so a study archives and tables them like any other run.

A measurement is a registered function ``config -> metrics`` with its default config; ``dacl measure
measurement=<name> key=value ...`` runs one, and a study with ``command: measure`` sweeps them (its grid names
``measurement`` like any other key). Its runtime keys (threads, paths) are classified once, in ``dacl.run_spec.RUNTIME_KEYS['measure']``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from dacl.engine.results import git_commit, hardware, versions
from dacl.engine.run_folder import run_in_folder
from dacl.errors import ConfigError
from dacl.registry import did_you_mean



@dataclass(frozen=True)
class Measurement:
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    defaults: dict[str, Any]
    describe: Callable[[dict[str, Any]], str]  # one line for the terminal


MEASUREMENTS: dict[str, Measurement] = {}


def measurement(name: str, defaults: dict[str, Any], describe: Callable[[dict[str, Any]], str] = str):
    """Register ``fn(config) -> metrics`` as measurement ``name``; ``defaults`` lists every key it takes."""
    def add(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        MEASUREMENTS[name] = Measurement(fn, {"seed": 0, "threads": None, "data_root": None, **defaults}, describe)
        return fn
    return add


def _load() -> None:
    import dacl.analysis.avalanche_comparison  # noqa: F401  (registers its measurement)
    import dacl.analysis.feature_analysis  # noqa: F401
    import dacl.analysis.lwf_reference  # noqa: F401
    import dacl.analysis.streaming_throughput  # noqa: F401
    import dacl.analysis.throughput  # noqa: F401
    import dacl.reliability  # noqa: F401


def registered_measurements() -> dict[str, Measurement]:
    """Every measurement ``dacl measure`` can run, by name (importing the modules that register them)."""
    _load()
    return dict(sorted(MEASUREMENTS.items()))


def compose(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The measurement's defaults with ``key=value`` overrides (values parsed as YAML); a wrong key is an error."""
    _load()
    given: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"'{item}' is not key=value; e.g. `dacl measure measurement=train_throughput method=dann`")
        given[key] = yaml.safe_load(value) if value else None
    name = given.pop("measurement", None)
    if name not in MEASUREMENTS:
        raise ConfigError(f"measurement={name!r} is not a registered measurement.{did_you_mean(str(name), list(MEASUREMENTS))} "
                          f"Measurements: {', '.join(sorted(MEASUREMENTS))}")
    spec = MEASUREMENTS[name]
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"measurement {name} has no option(s) {unknown}; it takes {sorted(spec.defaults)}")
    return {"measurement": name, **spec.defaults, **given}


def run_measurement(config: dict[str, Any], folder: str | Path, command: str | None = None) -> dict[str, Any]:
    """Run one composed measurement in ``folder`` (lock, status files, results.json as every run)."""
    import torch

    spec = MEASUREMENTS[config["measurement"]]
    provenance = {**git_commit(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def prepare() -> dict[str, Any]:
        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        return {}

    def execute(_: dict[str, Any]) -> dict[str, Any]:
        t0 = time.time()
        metrics = spec.fn(config)
        return {"status": "ok", "kind": "measurement", "measurement": config["measurement"], "seed": config["seed"],
                "method": config.get("method") or config.get("strategy") or config["measurement"],
                "benchmark": config.get("benchmark") or config.get("stream") or "", "task": config.get("task", ""),
                "command": command, "config": config, **provenance,
                "hardware": hardware(torch.device(metrics.get("device", "cpu"))),
                "versions": versions(), "wall_seconds": round(time.time() - t0, 2), "metrics": metrics}

    return run_in_folder(folder, main=True, resume=False, prepare=prepare, execute=execute,
                         record={"config": config, "command": command, **provenance})
