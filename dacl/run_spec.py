"""One run identity: which config keys can change what a run learns or reports, for every command.

Every leaf key of a composed config is classified here, once: a *runtime* key (paths, threads, progress bars,
device, resume, logging and checkpoint cadence) never changes a result; every other key does. The run folder's
name, the collector's grouping of runs into table rows, the reuse of a finished source model for TTA and the
stale-run check of the continual study all read these sets, and ``tests/test_run_spec.py`` fails when a config
gains a key that is not classified.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

# Keys that can never change a result, per command (`dacl run`, `dacl continual`).
RUNTIME_KEYS: dict[str, frozenset[str]] = {
    "run": frozenset({"data_root", "download", "tag", "benchmark.workers", "benchmark.path", "benchmark.cache_dir", "trainer.threads", "trainer.progress", "trainer.resume",
                      "trainer.device", "trainer.tensorboard", "trainer.log_every", "trainer.ckpt_every",
                      "trainer.save_model", "tta.source_runs", "pretrain.runs"}),
    "continual": frozenset({"data_root", "download", "tag", "trainer.device", "trainer.threads", "trainer.resume",
                            "trainer.ckpt_every", "trainer.log_every"}),
    "measure": frozenset({"data_root", "threads", "runs", "trees", "tllib"}),  # dacl/studies/measure.py: every other key is a result key
}

# Keys that change a result: whole sections (every key below them), and the loop's own options one by one, so a new
# option must be classified before it can be used.
RESULT_SECTIONS: dict[str, frozenset[str]] = {
    "run": frozenset({"method", "model", "benchmark", "tta", "pretrain", "plugins", "seed", "hparams_seed", "variant"}),
    "continual": frozenset({"stream", "strategy", "scenario", "seed", "model"}),
    "measure": frozenset(),
}
RESULT_OPTIONS: dict[str, frozenset[str]] = {
    "run": frozenset(f"trainer.{k}" for k in (
        "max_steps", "batch_size", "target_batch_size", "optimizer", "lr", "weight_decay", "momentum", "nesterov",
        "schedule", "schedule_kwargs", "grad_clip", "eval_every", "eval_batch_size", "amp", "validators",
        "channels_last", "reset_optimizer", "backbone_lr_mult", "source_batches")),
    "continual": frozenset(f"trainer.{k}" for k in (
        "steps_per_task", "epochs_per_task", "batch_size", "optimizer", "lr", "weight_decay", "momentum",
        "reset_optimizer",
        "mask_unseen_classes", "eval_batch_size", "amp", "grad_clip")),
    "measure": frozenset(),
}

# Keys the run folder's fixed path segments already name (runs/<tag>/<benchmark>/<method>.../seed<k>): left out of
# its override part. Mirrored by hydra.job.config.override_dirname.exclude_keys in configs/config.yaml and
# configs/continual.yaml (a test checks both).
FOLDER_KEYS: dict[str, frozenset[str]] = {
    "run": frozenset({"method", "benchmark", "seed", "experiment", "variant", "hparams_seed"}),
    "continual": frozenset({"stream", "strategy", "scenario", "seed"}),
    "measure": frozenset({"measurement", "seed"}),
}


def classify(key: str, kind: str = "run") -> str | None:
    """'runtime', 'result', or None for a key nobody has classified yet."""
    if key in RUNTIME_KEYS[kind]:
        return "runtime"
    parts = key.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # trainer.schedule_kwargs.x is an option's
    if prefixes & RESULT_OPTIONS[kind] or parts[0] in RESULT_SECTIONS[kind]:
        return "result"
    return None


def non_result_overrides(kind: str = "run") -> frozenset[str]:
    """Override keys that do not separate configurations (the folder names them, or they cannot change a result)."""
    return FOLDER_KEYS[kind] | RUNTIME_KEYS[kind]


def result_config(config: Mapping[str, Any], kind: str = "run") -> dict[str, Any]:
    """``config`` without its runtime keys: two runs with equal result configs are the same configuration. A
    method's ``search`` ranges only matter to a random trial (hparams_seed > 0), so a default run leaves them out."""
    out = copy.deepcopy(dict(config))
    if not out.get("hparams_seed") and isinstance(out.get("method"), dict):
        out["method"].pop("search", None)
    for key in RUNTIME_KEYS[kind]:
        *parents, leaf = key.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def leaf_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of a nested config (a list is one leaf: its items are values, not keys)."""
    if isinstance(config, Mapping) and config:
        return [k for name, v in config.items() for k in leaf_keys(v, f"{prefix}{name}.")]
    return [prefix.rstrip(".")] if prefix else []


def migrate_legacy(config: Mapping[str, Any], kind: str = "run") -> dict[str, Any]:
    """A recorded config in today's key names: continual runs recorded their loop options under ``train`` and
    the process's under top-level ``threads`` / ``device`` until they moved to ``trainer.*``, as for ``dacl run``."""
    out = dict(config)
    if kind == "continual" and "train" in out and "trainer" not in out:
        trainer = dict(out.pop("train"))
        for key in ("threads", "device"):
            if key in out:
                trainer[key] = out.pop(key)
        out["trainer"] = trainer
    return out
