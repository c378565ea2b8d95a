"""Runs other runs start from, trained once per configuration: the source model every test-time method of a
table adapts (``tta.source_runs``), the pre-trained backbone every fine-tuning baseline starts from
(``pretrain.overrides``). Each lives in ``<root>/<benchmark>/<method>/<digest>/seed<k>``, the digest covering every
result-changing key (dacl.run_spec), and is an ordinary run (results.json, model weights); runs side by side that
need the same one wait for the one training it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any

from dacl.errors import ConfigError


def shared_run_dir(root: str | Path, config: dict[str, Any]) -> Path:
    from dacl.run_spec import result_config

    digest = hashlib.sha1(json.dumps(result_config(config), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(root) / str(config["benchmark"]["name"]) / str(config["method"]["name"]) / digest / f"seed{config['seed']}"


def ensure_shared_run(config: dict[str, Any], folder: Path, command: str | None, keep_checkpoint: bool = False) -> Path:
    """Train ``config`` into ``folder`` unless it has finished there (a killed one resumes); returns the folder.
    ``keep_checkpoint``: also keep the final trainer checkpoint (a test-time run continues from its exact state)."""
    from dacl.engine.run_folder import folder_status
    from dacl.engine.weights import WEIGHTS_FILE
    from dacl.experiment import run_experiment

    folder.parent.mkdir(parents=True, exist_ok=True)
    needed = [folder / WEIGHTS_FILE] + ([folder / "checkpoint.pt"] if keep_checkpoint else [])
    with open(folder.parent / f".{folder.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocking: a second run waits for the first to finish this one
        if folder_status(folder)[0] != "ok" or not all(p.is_file() for p in needed):
            trainer = dict(config["trainer"])
            trainer.update(resume=True, save_model=True)
            if keep_checkpoint:
                trainer["ckpt_every"] = int(trainer["max_steps"])
            print(f"training the shared run {folder} ...", flush=True)
            run_experiment({**config, "trainer": trainer}, folder, command=command)
    return folder


def compose_run_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved ``dacl run`` config of ``overrides`` (inside a Hydra job its compose API, else a fresh one)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from dacl.cli import CONFIG_DIR, _register_resolvers, search_path_override

    _register_resolvers()
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose("config", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("config", overrides=[*overrides, *search_path_override()])
    except HydraException as exc:
        raise ConfigError(f"pretrain.overrides {list(overrides)} do not compose: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


INHERITED = ("data_root", "download", "benchmark.workers", "trainer.threads", "trainer.progress", "trainer.device",
             "trainer.tensorboard")  # runtime keys a pre-training run takes from the run that needs it


def inherit_runtime(config: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the parent run's data folder, device and threads: where and how to run, never what."""
    out = {**config}
    for dotted in INHERITED:
        section, _, key = dotted.rpartition(".")
        source = parent.get(section, {}) if section else parent
        if key not in source:
            continue
        if section:
            out[section] = {**out.get(section, {}), key: source[key]}
        else:
            out[key] = source[key]
    return out


def pretrained_weights(plain: dict[str, Any], command: str | None) -> Path | None:
    """The weights file of the run ``pretrain.overrides`` names (trained first if no shared run holds it), or None."""
    from dacl.engine.weights import WEIGHTS_FILE

    spec = dict(plain.get("pretrain") or {})
    overrides, root = list(spec.pop("overrides", None) or []), spec.pop("runs", None)
    if spec:
        raise ConfigError(f"unknown pretrain option(s) {sorted(spec)}; known: overrides, runs")
    if not overrides:
        return None
    if (plain.get("method") or {}).get("checkpoint"):
        raise ConfigError("give the starting weights once: method.checkpoint=<file> or pretrain.overrides=[...], not both")
    config = inherit_runtime(compose_run_config(overrides), plain)
    if config.get("pretrain", {}).get("overrides"):
        raise ConfigError("a pre-training run cannot itself name pretrain.overrides")
    folder = shared_run_dir(root or Path("runs") / "pretrain", config)
    return ensure_shared_run(config, folder, f"dacl run {' '.join(overrides)}") / WEIGHTS_FILE
