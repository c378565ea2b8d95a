"""Config -> objects -> trained run -> ``results.json``. Shared by the CLI, the demo and scripts.

``results.json`` is written atomically and only when the run succeeds; a failed run leaves
``failed.json`` instead, so collectors can never mistake a crash for a result.
"""
from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from dacl import distributed
from dacl.benchmarks.domain_pair import DomainPair
from dacl.data.features import FeaturePair
from dacl.engine.results import git_commit, hardware, versions
from dacl.engine.run_folder import run_in_folder
from dacl.engine.shared_runs import pretrained_weights
from dacl.engine.signals import RunInterrupted, graceful_stop
from dacl.engine.trainer import FitResult, Trainer, TrainerConfig, resolve_device, seed_everything
from dacl.methods.base import Method
from dacl.models.classifier import build_classifier
from dacl.errors import ConfigError
from dacl.registry import BENCHMARKS, METHODS, PLUGINS
from dacl.sweep import sample_hparams

log = logging.getLogger(__name__)

def selection_note(validators: Mapping[str, Any]) -> str:
    """What each selection column means, including any label-free validator the run scored checkpoints with."""
    extra = [f"'{name}': step with the best '{name}' score ({(fn.__doc__ or 'label-free').strip().splitlines()[0]})"
             for name, fn in validators.items() if name not in ("source_val", "oracle")]
    return "; ".join(["'last': final step",
                      "'source_val': step with the best held-out source accuracy (no target labels)", *extra,
                      "'oracle': step with the best target test accuracy (uses target labels, reported only as an upper bound)"])


TTA_NOTE = ("'last': the source model after its last training step, adapted by the test-time method on the target "
            "test batches (labels only score the predictions); source_model_target_test_acc: the source model "
            "unadapted, under each selection protocol of its training run")


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _split_name(section: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    rest = dict(section)
    return rest.pop("name"), rest


def build_benchmark(cfg: Mapping[str, Any], device: torch.device) -> DomainPair:
    name, kwargs = _split_name(cfg["benchmark"])
    factory = BENCHMARKS.get(name)
    with unknown_options_as_config_error(f"benchmark '{name}'", f"configs/benchmark/{name}.yaml"):
        return factory(data_root=cfg.get("data_root"), download=bool(cfg.get("download", False)), device=device,
                       **kwargs)


@contextmanager
def unknown_options_as_config_error(what: str, reference: str) -> Iterator[None]:
    """A key a factory does not take (``+model.foo=1``) becomes one line naming it, not a TypeError traceback."""
    try:
        yield
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"{what} got an unknown option ({str(exc).split('got ')[-1]}); see {reference} for its "
                          "options") from exc


def build_method(cfg: Mapping[str, Any], data: DomainPair) -> Method:
    name, hparams = _split_name(cfg["method"])
    search = hparams.pop("search", None) or {}
    unknown = set(search) - set(METHODS.get(name).defaults)
    if unknown:
        raise ConfigError(f"method '{name}': search space names unknown hyper-parameter(s) {sorted(unknown)}")
    hparams.update(sample_hparams(name, search, int(cfg.get("hparams_seed") or 0)))
    method: Method = METHODS.get(name)(**hparams)
    model_cfg = dict(cfg["model"])
    with unknown_options_as_config_error(f"model '{model_cfg.get('backbone')}'", "configs/model/*.yaml"):
        model = build_classifier(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                                 **model_cfg)
    method.setup(model, data.num_classes)
    add_plugins(method, cfg.get("plugins"), int(cfg.get("seed") or 0))
    return method


def add_plugins(method: Method, specs: Any, seed: int) -> None:
    """Stack configured plugins (``name`` or ``{name: ..., **hparams}``) onto ``method``; a plugin with a ``seed``
    hyper-parameter (replay buffers, A-GEM memory) follows the run's seed unless the config sets it."""
    for spec in specs or []:
        name, kwargs = _split_name(spec if isinstance(spec, Mapping) else {"name": spec})
        if "seed" in PLUGINS.get(name).defaults:
            kwargs.setdefault("seed", seed)
        method.add_plugin(PLUGINS.get(name)(**kwargs))


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak accelerator memory of this process (CUDA allocator) and its peak resident set size (host)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    out = {"host_peak_rss": round(rss, 1)}
    if device.type == "cuda":
        out["cuda_max_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def count_params(module: torch.nn.Module) -> dict[str, int]:
    return {"trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in module.parameters())}


# Top-level keys of configs/config.yaml: a `+foo=1` (a typo, or an option of `dacl continual`) is an error, not a
# setting that silently does nothing.
RUN_KEYS = frozenset({"method", "benchmark", "model", "trainer", "seed", "data_root", "download", "plugins", "tag",
                      "hparams_seed", "variant", "tta", "pretrain"})


def check_keys(plain: Mapping[str, Any], known: frozenset[str], command: str, hint: str = "") -> None:
    unknown = sorted(set(plain) - known)
    if unknown:
        raise ConfigError(f"unknown {command} option(s) {unknown}; {command} takes {sorted(known)}{hint}")


def run_experiment(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path, command: str | None = None,
                   stop_at: int | None = None, keep_setup_failures: bool = False) -> dict[str, Any]:
    """Run one configured experiment in ``run_dir``; returns (and atomically writes) the results dict.

    Config, data and model are built and checked first: a mistake there leaves the folder untouched (no stale
    result deleted, no failed.json for a run that never started)."""
    run_dir = Path(run_dir)
    plain = _plain(cfg)
    dist, device_name = distributed.from_env(str(plain["trainer"].get("device", "auto")))  # torchrun: join the group
    started = time.time()
    provenance = {**git_commit(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # the code as the run began

    def prepare() -> dict[str, Any]:
        check_keys(plain, RUN_KEYS, "dacl run")
        trainer_cfg = TrainerConfig.from_dict(plain["trainer"])
        if trainer_cfg.threads:
            torch.set_num_threads(int(trainer_cfg.threads))
        device = resolve_device(device_name)
        seed = int(plain["seed"])
        data = build_benchmark(plain, device)
        method_cls = METHODS.get(plain["method"]["name"])
        closed_form = bool(getattr(method_cls, "closed_form", False))
        if closed_form != isinstance(data, FeaturePair):
            raise ConfigError(f"method '{method_cls.registry_name}' " + (
                "is fit on precomputed features: use a feature benchmark (benchmark=office_caltech_surf)" if closed_form
                else f"trains a network on images; benchmark '{data.name}' holds precomputed features (use "
                     "method=feature_adapter)"))
        if closed_form:
            _, hparams = _split_name(plain["method"])
            hparams.pop("search", None)
            return dict(closed_form=method_cls(**hparams), data=data, device=device)
        # pretrain.overrides: the shared run it starts from (trained here if missing, before this run's seeding)
        weights = pretrained_weights(plain, command)
        seed_everything(seed)  # model init depends only on the seed, not on data loading or a shared run's training
        source_method = method_cls.source_method
        # a test-time method adapts a trained model: the loop trains its source method first (or takes the shared
        # source run of tta.source_runs), then it adapts
        learner_cfg, shared_source = plain, None
        if weights is not None:
            if "checkpoint" not in method_cls.defaults:
                raise ConfigError(f"method '{method_cls.registry_name}' does not start from pre-trained weights; "
                                  "pretrain.overrides is for the fine-tuning baselines (linear_probe, full_finetune, "
                                  "lora, ...)")
            learner_cfg = {**plain, "method": {**plain["method"], "checkpoint": str(weights)}}
        if source_method:
            from dacl.engine.tta import build_test_time_method, shared_source_dir, source_learner_config

            learner_cfg = source_learner_config(plain, source_method)
            shared_source = shared_source_dir(plain, source_method)
            if shared_source is not None and dist.world_size > 1:
                raise ConfigError("a shared source run (tta.source_runs) is trained by one process; run test-time "
                                  "adaptation without torchrun")
        method = build_method(learner_cfg, data).to(device)
        if source_method:  # an impossible combination (Tent on a model without BatchNorm) fails before any training
            build_test_time_method(plain, copy.deepcopy(method.model), data.num_classes)
        trainer = Trainer(method, data, trainer_cfg, run_dir, seed=seed, dist=dist)
        return dict(trainer=trainer, data=data, method=method, device=device, seed=seed, source_method=source_method,
                    shared_source=shared_source, pretrained=weights)

    def execute(ctx: dict[str, Any]) -> dict[str, Any]:
        if "closed_form" in ctx:
            return _closed_form_results(plain, ctx["data"], ctx["closed_form"], ctx["device"], command, started,
                                        provenance)
        trainer, data, method = ctx["trainer"], ctx["data"], ctx["method"]
        if ctx["shared_source"] is not None and not (trainer.cfg.resume and trainer.checkpoint_path.exists()):
            from dacl.engine.tta import ensure_source_run

            # the shared source run's final checkpoint: the fit below has nothing left to train
            trainer.load_checkpoint(ensure_source_run(plain, ctx["source_method"], ctx["shared_source"], command))
        with graceful_stop():
            fit = trainer.fit(stop_at=stop_at)
        if fit.steps < trainer.total_steps:  # paused on purpose: checkpoint written, no final result
            return {"status": "paused", "step": fit.steps}
        if not dist.is_main:  # rank 0 evaluated and writes the one results.json
            return {"status": "worker", "rank": dist.rank}
        adaptation = None
        if ctx["source_method"]:
            from dacl.engine.tta import adapt_on_target_test

            with graceful_stop():
                try:
                    adaptation = adapt_on_target_test(plain, method.model, data, ctx["seed"])
                    if ctx["shared_source"] is not None:
                        adaptation["source_run"] = str(ctx["shared_source"])
                except RunInterrupted:  # keep the trained source model: a resume goes straight to adaptation
                    trainer.save_checkpoint()
                    raise
        results = _results(plain, data, method, trainer, fit, ctx["device"], command, time.time() - started,
                           provenance, adaptation)
        if ctx["pretrained"] is not None:
            results["pretrained_from"] = str(ctx["pretrained"].parent)
        return results

    return run_in_folder(run_dir, main=dist.is_main, resume=bool(plain["trainer"].get("resume")), prepare=prepare,
                         execute=execute, record={"config": plain, "command": command, "rank": dist.rank, **provenance},
                         keep_setup_failures=keep_setup_failures)


def _closed_form_results(plain: dict[str, Any], data: FeaturePair, method: Method, device: torch.device,
                         command: str | None, started: float, provenance: dict[str, Any]) -> dict[str, Any]:
    """A closed-form fit (shallow DA on features) in the one run-record schema: no steps, one 'fixed' result per
    classifier, the first classifier's as target_test_acc."""
    t0 = time.time()
    scores = method.fit_and_score(data.xs, data.ys, data.xt, data.yt)
    return {"status": "ok", "kind": "feature_space", "benchmark": data.name, "task": data.task,
            "method": plain["method"]["name"], "variant": plain.get("variant"), "hparams_seed": 0,
            "method_hparams": method.hparams, "seed": int(plain["seed"]), "command": command, "config": plain,
            **provenance, "hardware": hardware(device), "versions": versions(), "data_sizes": data.sizes(), "steps": 0,
            **({"data_provenance": data.provenance} if getattr(data, "provenance", None) else {}),
            "wall_seconds": round(time.time() - started, 2), "fit_seconds": round(time.time() - t0, 2),
            "selection_protocols": "'fixed': the closed-form fit (nothing to select from); target labels only score",
            "metrics": {"target_test_acc": {"fixed": scores[method.hparams["classifiers"][0]]}, "classifier_acc": scores}}


def _results(plain: dict[str, Any], data: DomainPair, method: Method, trainer: Trainer, fit: FitResult,
             device: torch.device, command: str | None, wall: float, provenance: dict[str, Any],
             adaptation: dict[str, Any] | None = None) -> dict[str, Any]:
    metric_keys = ("source_val_acc", "source_test_acc", "target_test_acc", "target_test_ece")
    selection = {proto: {"step": int(rec["step"]), **{k: rec[k] for k in metric_keys}} for proto, rec in fit.selected.items()}
    metrics = {
        "source_test_acc": selection["last"]["source_test_acc"],
        "target_test_acc": {proto: sel["target_test_acc"] for proto, sel in selection.items()},
        "target_test_ece": {proto: sel["target_test_ece"] for proto, sel in selection.items()},
    }
    if adaptation is not None:  # the selections scored the source model; the adapted model is reported on its own
        metrics = {"source_test_acc": metrics["source_test_acc"],
                   "target_test_acc": {"last": adaptation["target_test_acc"]},
                   "source_model_target_test_acc": metrics["target_test_acc"], "test_time_adaptation": adaptation}
    return {
        "status": "ok",
        "kind": "tta" if adaptation is not None else "da",
        "benchmark": data.name,
        "task": data.task,
        "method": plain["method"]["name"],
        "variant": plain.get("variant") or (f"hp{plain['hparams_seed']}" if plain.get("hparams_seed") else None),
        "hparams_seed": int(plain.get("hparams_seed") or 0),
        "method_hparams": adaptation["method_hparams"] if adaptation is not None else method.hparams,
        "seed": int(plain["seed"]),
        "command": command,
        "config": plain,
        **provenance,
        "hardware": {**hardware(device), "processes": trainer.dist.world_size},
        "versions": versions(),
        "data_sizes": data.sizes(),
        **({"data_provenance": data.provenance} if data.provenance else {}),
        "steps": fit.steps,
        "resumed_from": trainer.resumed_from,
        "wall_seconds": round(wall, 2),
        "train_seconds": round(fit.train_seconds, 2),
        "train_images_per_second": round(fit.images_per_second, 1),
        "params": {"model": count_params(method.model), "method_total": count_params(method)},
        "time_per_step_ms": round(1000 * fit.train_seconds / max(1, fit.steps), 3),
        "peak_memory_mb": peak_memory_mb(device),
        "selection_protocols": selection_note(trainer.validators) if adaptation is None else TTA_NOTE,
        "metrics": metrics,
        "selection": selection,
        "history": fit.history,
    }
