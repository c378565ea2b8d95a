"""Test-time adaptation runs: a trained source model, a TTA method, and a sequence of unlabelled test domains.

Protocols (named, because results differ a lot between them):
- ``episodic_batch``: reset to the source model before every test batch (no memory at all);
- ``episodic_domain``: reset at the start of each domain, adapt across that domain's batches;
- ``continual``: never reset; adaptation carries over from one domain to the next (online TTA);
- ``offline``: SHOT's source-free protocol: ``epochs`` shuffled passes over the unlabelled target *training* set,
  then the frozen model scores the target test set.
Labels only score predictions. Test batches are drawn in a fixed shuffled order (seeded), since
class-sorted batches would corrupt batch statistics.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from dacl.engine.weights import WEIGHTS_FILE, load_weights
from dacl.engine import signals
from dacl.engine.signals import RunInterrupted
from dacl.errors import ConfigError, DataError
from dacl.methods.base import Method
from dacl.metrics import accuracy, predict_in_batches
from dacl.registry import METHODS

PROTOCOLS = ("episodic_batch", "episodic_domain", "continual", "offline")
ONLINE_PROTOCOLS = PROTOCOLS[:3]
_stop_requested = signals.requested  # read between test batches (a flag set by the SIGTERM/SIGINT handler)


def _check_stop(batches_done: int) -> None:
    """Stop between two test batches when a signal asked for it (graceful_stop is active around the run)."""
    signum = _stop_requested()
    if signum is not None:
        raise RunInterrupted(signum, batches_done, phase="test-time adaptation")


def load_source_model(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load the weights a training run saved (``model.safetensors``, or ``model.pt`` from older runs)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"source model '{path}' not found; train one first, e.g. "
                        f"`dacl run method=source_only model=lenet_bn ...` writes <run_dir>/{WEIGHTS_FILE}")
    state = load_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not fit the configured model ({exc.args[0].splitlines()[0]}); "
                          "use the same model config as the source run") from exc
    return model


def build_tta(name: str, model: torch.nn.Module, num_classes: int, **hparams) -> Method:
    method = METHODS.get(name)(**hparams)
    method.setup(model, num_classes)
    return method


def run_tta(method: Method, domains: Sequence[tuple[str, Tensor, Tensor]], protocol: str = "episodic_domain",
            batch_size: int = 128, seed: int = 0) -> dict[str, float]:
    """Accuracy per domain (in order) of ``method.adapt`` predictions under ``protocol``."""
    if protocol not in ONLINE_PROTOCOLS:
        raise ConfigError(f"unknown online TTA protocol '{protocol}'; choose one of {', '.join(ONLINE_PROTOCOLS)} "
                          "(the offline protocol is fit_tta, then evaluate_adapted)")
    gen = torch.Generator().manual_seed(seed)
    accuracies: dict[str, float] = {}
    for name, x, y in domains:
        if protocol == "episodic_domain":
            method.reset()
        order = torch.randperm(len(x), generator=gen).to(x.device)
        correct = torch.zeros((), dtype=torch.long, device=y.device)  # summed on the device: one host sync per domain
        for start in range(0, len(x), batch_size):
            _check_stop(start // batch_size)
            idx = order[start:start + batch_size]
            if protocol == "episodic_batch":
                method.reset()
            correct += (method.adapt(x[idx]).argmax(1) == y[idx]).sum()
        accuracies[name] = int(correct) / len(x)
    return accuracies


def fit_tta(method: Method, x: Tensor, epochs: int, batch_size: int = 64, seed: int = 0,
            lr_decay: bool = False) -> None:
    """Offline (source-free) adaptation as in the SHOT paper: several shuffled passes over the unlabelled
    target training set. ``lr_decay``: SHOT's schedule lr0 (1 + 10 p)^-0.75 over the run (p = progress).
    Score afterwards with ``evaluate_adapted``."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = getattr(method, "optimizer", None)
    base = [g["lr"] for g in optimizer.param_groups] if optimizer is not None else []
    per_epoch = len(x) // batch_size
    total, it = max(1, epochs * per_epoch), 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for start in range(0, len(x) - batch_size + 1, batch_size):  # drop the ragged last batch (BN stats)
            _check_stop(it)
            if lr_decay and optimizer is not None:
                for group, lr0 in zip(optimizer.param_groups, base):
                    group["lr"] = lr0 * (1 + 10 * it / total) ** -0.75
            method.adapt(x[order[start:start + batch_size]])
            it += 1


@torch.no_grad()
def evaluate_adapted(method: Method, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Accuracy of the adapted model with frozen weights and BN in eval mode (running statistics)."""
    model = method.model
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return accuracy(predict_in_batches(model, x, batch_size), y)
    finally:
        for m, mode in modes.items():
            m.training = mode


@dataclass(frozen=True)
class TTASettings:
    """A run's ``tta`` section: how a test-time method meets the target (see PROTOCOLS) and where its source
    model comes from."""

    protocol: str = "episodic_domain"
    batch_size: int = 128
    epochs: int = 1               # offline: passes over the unlabelled target training set
    lr_decay: bool = False        # offline: SHOT's lr0 (1 + 10 p)^-0.75
    domain_group: int | str | None = None  # a suite of target domains (mnist_c): adapt on this group's domains in turn
    source: dict[str, Any] = field(default_factory=dict)  # the source method's hyper-parameters (e.g. label smoothing)
    source_runs: str | None = None  # a folder of shared source runs (None: the run trains its own source model)


def tta_settings(plain: dict) -> TTASettings:
    """The run's ``tta`` section, validated."""
    tta = dict(plain.get("tta") or {})
    known = set(TTASettings.__dataclass_fields__)
    if set(tta) - known:
        raise ConfigError(f"unknown tta option(s) {sorted(set(tta) - known)}; known: {', '.join(sorted(known))}")
    settings = TTASettings(**{k: v for k, v in tta.items() if v is not None or k == "source_runs"})
    if settings.protocol not in PROTOCOLS:
        raise ConfigError(f"unknown TTA protocol '{settings.protocol}'; choose one of {', '.join(PROTOCOLS)}")
    for key in ("batch_size", "epochs"):
        if not isinstance(getattr(settings, key), int) or getattr(settings, key) < 1:
            raise ConfigError(f"tta.{key} must be a positive integer, got {getattr(settings, key)!r}")
    if not isinstance(settings.source, dict):
        raise ConfigError(f"tta.source holds the source method's hyper-parameters as a mapping, got {settings.source!r}")
    return settings


def source_learner_config(plain: dict, source_method: str) -> dict:
    """The config of the source run a test-time method adapts: the same benchmark, model, trainer and seed, the
    source method with ``tta.source``'s hyper-parameters, and nothing that only concerns adaptation."""
    learner = {k: v for k, v in plain.items() if k not in ("tta", "variant", "hparams_seed")}
    return {**learner, "method": {"name": source_method, **(tta_settings(plain).source or {})}}


def shared_source_dir(plain: dict, source_method: str) -> Path | None:
    """The shared source run (dacl.engine.shared_runs) of this configuration under ``tta.source_runs``, so every
    test-time method and protocol of a table adapts the same trained model; None: the run trains its own."""
    from dacl.engine.shared_runs import shared_run_dir

    root = tta_settings(plain).source_runs
    return shared_run_dir(root, source_learner_config(plain, source_method)) if root else None


def ensure_source_run(plain: dict, source_method: str, folder: Path, command: str | None) -> Path:
    """Train the shared source run in ``folder`` unless it has finished; returns its final checkpoint, the exact
    state the test-time run continues from."""
    from dacl.engine.shared_runs import ensure_shared_run

    learner = source_learner_config(plain, source_method)
    return ensure_shared_run(learner, folder, f"source run of: {command}" if command else None, keep_checkpoint=True) \
        / "checkpoint.pt"


def build_test_time_method(plain: dict, model: torch.nn.Module, num_classes: int) -> Method:
    """The configured TTA method (``plain["method"]``) set up on ``model``, which it adapts in place."""
    hparams = dict(plain["method"])
    name = hparams.pop("name")
    hparams.pop("search", None)
    return build_tta(name, model, num_classes, **hparams)


def target_domains(data, group: int | str | None) -> list[tuple[str, Tensor, Tensor]]:
    """The target test domains a run adapts on, in order: the benchmark's named domains (of ``group`` when given),
    or the whole target test set as one domain."""
    x, y = data.target_test
    domains = list(getattr(data, "target_domains", ()))
    if not domains:
        if group is not None:
            raise ConfigError(f"tta.domain_group={group} needs a benchmark with several target domains (e.g. mnist_c); "
                              f"{data.name} has one")
        return [("target", x, y)]
    chosen = [d for d in domains if group is None or str(d.group) == str(group)]
    if not chosen:
        groups = sorted({str(d.group) for d in domains})
        raise ConfigError(f"no target domain of {data.name} is in group {group!r}; tta.domain_group is one of "
                          f"{', '.join(groups)}")
    return [(d.name, x[d.start:d.stop], y[d.start:d.stop]) for d in chosen]


def adapt_on_target_test(plain: dict, source_model: torch.nn.Module, data, seed: int) -> dict[str, Any]:
    """The configured TTA method adapts a copy of ``source_model`` under the run's ``tta`` protocol (online: on the
    target test batches, domain after domain; offline: on the unlabelled target training set, then scored frozen);
    returns its target test accuracy (the mean over domains) beside the unadapted source model's, per domain too
    when the benchmark has several."""
    from dacl.engine.trainer import seed_everything

    settings = tta_settings(plain)
    domains = target_domains(data, settings.domain_group)
    source_model.eval()
    before = {name: accuracy(predict_in_batches(source_model, x, 2048), y) for name, x, y in domains}
    seed_everything(seed)
    method = build_test_time_method(plain, copy.deepcopy(source_model), data.num_classes)
    if settings.protocol == "offline":
        fit_tta(method, data.target_train_x, settings.epochs, settings.batch_size, seed, settings.lr_decay)
        after = {name: evaluate_adapted(method, x, y) for name, x, y in domains}
    else:
        after = run_tta(method, domains, settings.protocol, settings.batch_size, seed)
    mean = lambda accs: sum(accs.values()) / len(accs)  # noqa: E731  (equal-sized domains: the pooled accuracy)
    out = {"method": method.registry_name, "protocol": settings.protocol, "batch_size": settings.batch_size,
           "source_target_test_acc": mean(before), "target_test_acc": mean(after), "method_hparams": method.hparams}
    if settings.protocol == "offline":
        out.update(epochs=settings.epochs, lr_decay=settings.lr_decay)
    if len(domains) > 1 or domains[0][0] != "target":
        # the order the domains were met in (archives store mappings with sorted keys)
        out.update(domain_group=settings.domain_group, per_domain=after, source_per_domain=before,
                   domain_order=[name for name, _, _ in domains])
    return out
