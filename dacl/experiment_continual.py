"""Continual-learning config -> stream, model, plugins -> ``run_stream`` -> ``results.json`` + heatmap PNG.

Used by ``dacl continual`` (and so by ``dacl reproduce`` for continual studies). As with DA runs, ``results.json`` is
written atomically and only on success; a failure leaves ``failed.json`` (collectors skip it).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from dacl import distributed
from dacl.engine.continual import ContinualConfig, TaskMask, head_size, run_stream
from dacl.engine.results import git_commit, hardware, versions
from dacl.engine.run_folder import run_in_folder
from dacl.engine.signals import graceful_stop
from dacl.engine.trainer import resolve_device, seed_everything
from dacl.errors import ConfigError
from dacl.experiment import add_plugins, check_keys, count_params
from dacl.methods.base import Method
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS, STREAMS

log = logging.getLogger(__name__)
PROTOCOL_NOTE = ("accuracy_matrix[i][j]: accuracy on task j's test set after training task i; average_accuracy is "
                 "the mean of the last row; no model selection (the final model is evaluated), no test labels seen")


# Top-level keys of configs/continual.yaml: anything else (a `+plugins=...` meant for `dacl run`) is an error, not a
# silently ignored setting.
CONTINUAL_KEYS = frozenset({"stream", "strategy", "scenario", "seed", "data_root", "download", "model", "trainer",
                            "tag"})
RUNTIME_TRAINER_KEYS = ("device", "threads")  # trainer.* options of the process, not of the loop


def build_stream(plain: Mapping[str, Any], device: torch.device):
    spec = dict(plain["stream"])
    name = spec.pop("name")
    spec.pop("protocol", None)
    return STREAMS.get(name)(data_root=plain.get("data_root"), download=bool(plain.get("download", False)),
                             device=device, **spec)


def build_continual_method(plain: Mapping[str, Any], stream, device: torch.device) -> Method:
    """Naive fine-tuning (``source_only``) on a TaskMask-wrapped classifier, plus the strategy's plugins."""
    scenario = plain["scenario"]
    x0 = stream.tasks[0].train[0]
    model_cfg = dict(plain["model"])
    n_out = head_size(stream, scenario)
    model = TaskMask(build_classifier(model_cfg.pop("backbone"), n_out, x0.shape[1], x0.shape[-1], **model_cfg))
    method = METHODS.build("source_only")
    method.setup(model, n_out)
    add_plugins(method, plain["strategy"].get("plugins"), int(plain["seed"]))
    return method.to(device)


def heatmap_png(matrix: list[list[float]], task_names: list[str], title: str, path: Path) -> None:
    """The accuracy matrix as a labelled heatmap (rows: after training task i; columns: tested on task j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix) * 100
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * m.shape[1], 1.0 + 0.6 * m.shape[0]))
    ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", color="white" if m[i, j] < 60 else "black", fontsize=7)
    ax.set_xticks(range(m.shape[1]), [n.split(":")[0] for n in task_names], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(m.shape[0]), [f"after {i}" for i in range(m.shape[0])], fontsize=7)
    ax.set_xlabel("tested on task")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def run_continual(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path, command: str | None = None,
                  keep_setup_failures: bool = False) -> dict[str, Any]:
    """Run one configured stream in ``run_dir`` through the one loop; returns (and atomically writes) the results.
    As for ``dacl run``, config and data mistakes leave the folder untouched."""
    run_dir = Path(run_dir)
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    dist, device_name = distributed.from_env(str((plain.get("trainer") or {}).get("device", "auto")))  # torchrun: join the group
    provenance = {**git_commit(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    started = time.time()
    seed = int(plain["seed"])
    name = f"{plain['stream']['name']} {plain['scenario']}-IL {plain['strategy']['name']} seed {seed}"

    def prepare() -> dict[str, Any]:
        check_keys(plain, CONTINUAL_KEYS, "dacl continual", " (plugins go in strategy.plugins or a configs/strategy file)")
        train = {k: v for k, v in plain["trainer"].items() if k not in RUNTIME_TRAINER_KEYS}
        unknown = set(train) - set(ContinualConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown trainer option(s) {sorted(unknown)} for a continual run; valid: "
                              f"{sorted([*ContinualConfig.__dataclass_fields__, *RUNTIME_TRAINER_KEYS])}")
        ccfg = ContinualConfig(scenario=plain["scenario"], joint=bool(plain["strategy"].get("joint")), **train)
        if plain["trainer"].get("threads"):
            torch.set_num_threads(int(plain["trainer"]["threads"]))
        device = resolve_device(device_name)
        stream = build_stream(plain, device)
        seed_everything(seed)
        return dict(ccfg=ccfg, stream=stream, device=device, method=build_continual_method(plain, stream, device))

    def execute(ctx: dict[str, Any]) -> dict[str, Any]:
        stream, method = ctx["stream"], ctx["method"]

        def progress(i: int, acc: float) -> None:
            log.info("%s: task %d/%d done, mean acc on tasks so far %.4f", name, i + 1, len(stream), acc)

        with graceful_stop():
            metrics = run_stream(method, stream, ctx["ccfg"], seed=seed, progress=progress if dist.is_main else None,
                                 dist=dist, run_dir=run_dir)
        if not dist.is_main:
            return {"status": "worker", "rank": dist.rank}
        task_names = [t.name for t in stream.tasks]
        heatmap_png(metrics["accuracy_matrix"], task_names, name, run_dir / "accuracy_matrix.png")
        return {
            "status": "ok", "kind": "continual", "benchmark": plain["stream"]["name"], "task": plain["scenario"],
            "stream": plain["stream"]["name"], "scenario": plain["scenario"], "method": plain["strategy"]["name"],
            "variant": None, "seed": seed, "command": command, "config": plain, **provenance,
            "hardware": {**hardware(ctx["device"]), "processes": dist.world_size}, "versions": versions(),
            "task_names": task_names, "wall_seconds": round(time.time() - started, 2),
            "params": {"model": count_params(method.model)}, "selection_protocols": PROTOCOL_NOTE,
            "resumed_from": metrics["resumed_from"],
            "metrics": {k: v for k, v in metrics.items() if k not in ("per_task_seconds", "resumed_from")},
            "per_task_seconds": metrics["per_task_seconds"],
        }

    return run_in_folder(run_dir, main=dist.is_main, resume=bool((plain.get("trainer") or {}).get("resume")),
                         prepare=prepare, execute=execute,
                         record={"config": plain, "command": command, "rank": dist.rank, **provenance},
                         keep_setup_failures=keep_setup_failures)
