"""What the one training loop trains on, in order, and how it scores the model.

A ``Curriculum`` is a list of ``Stage``s, one per experience: a DA run is one stage (labelled source plus
unlabelled target batches), a continual stream one stage per task. The curriculum also owns evaluation,
because what a score means differs by kind: a DA run scores checkpoints every ``eval_every`` steps for the
validators to select from, a CL stream scores every task after each experience (the accuracy matrix).
Everything else — optimizer, AMP, clipping, schedule, hooks, logs, checkpoint/resume — is the loop's
(``dacl.engine.trainer.Trainer``) and holds for every kind.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from dacl.methods.base import Experience
from dacl.metrics import accuracy, expected_calibration_error, predict_in_batches
from dacl.registry import VALIDATORS
from dacl.validators import EvalContext

if TYPE_CHECKING:
    from dacl.benchmarks.domain_pair import DomainPair
    from dacl.engine.trainer import Trainer


@dataclass
class Stage:
    """One experience as the loop trains it: its labelled data, optional unlabelled target data, and length."""

    experience: Experience
    inputs: Tensor
    labels: Tensor
    steps: int
    batch_size: int
    stream_seed: int  # the labelled batch stream's seed (the target stream uses stream_seed + 1)
    target_inputs: Tensor | None = None
    target_batch_size: int | None = None


class Curriculum(ABC):
    """Base: the stages to train and how to score the model. ``stages`` and ``evaluate`` are required."""

    name: str = "train"
    periodic_eval: bool = True  # evaluate every trainer.eval_every steps; otherwise once after each experience
    validators: dict[str, Callable] = {}

    @abstractmethod
    def stages(self) -> list[Stage]:
        """The experiences, in training order."""

    def enter(self, index: int) -> None:
        """Called before training (or resuming) experience ``index``: e.g. set the logit mask of its classes."""

    def initial_records(self, trainer: "Trainer") -> list[dict[str, float]]:
        """Records taken before the first step (a CL stream's untrained accuracies, for forward transfer)."""
        return []

    @abstractmethod
    def evaluate(self, trainer: "Trainer", experience_index: int) -> dict[str, float]:
        """One evaluation record (flat floats, with ``step``), the model already in eval mode."""

    def select(self, history: list[dict[str, float]]) -> dict[str, dict[str, float]]:
        """Which evaluation record each selection protocol reports; default: the last one."""
        return {"last": history[-1]} if history else {}


class DomainAdaptation(Curriculum):
    """One experience: labelled source batches, and unlabelled target batches where the method needs them."""

    def __init__(self, data: "DomainPair", batch_size: int, target_batch_size: int | None, max_steps: int,
                 needs_target: bool, validators: list[str], seed: int) -> None:
        self.data, self.name = data, data.task
        self.validators = {name: VALIDATORS.get(name) for name in validators}
        self._stage = Stage(Experience(0, data.task, data=data.source_train), *data.source_train, max_steps, batch_size,
                            seed * 1000 + 1, data.target_train_x if needs_target else None,
                            (target_batch_size or batch_size) if needs_target else None)

    def stages(self) -> list[Stage]:
        return [self._stage]

    @torch.no_grad()
    def evaluate(self, trainer: "Trainer", experience_index: int) -> dict[str, float]:
        method, d = trainer.method, self.data
        pred = lambda x: predict_in_batches(method.predict, x, trainer.cfg.eval_batch_size, trainer.amp_dtype)  # noqa: E731
        val_logits, tgt_logits = pred(d.source_val[0]), pred(d.target_test[0])
        ctx = EvalContext(val_logits, d.source_val[1], tgt_logits, None, feature_fn=self._feature_fn(trainer))
        rec = {"step": trainer.step,
               "source_val_acc": accuracy(val_logits, d.source_val[1]),
               "source_test_acc": accuracy(pred(d.source_test[0]), d.source_test[1]),
               "target_test_acc": accuracy(tgt_logits, d.target_test[1]),
               "target_test_ece": expected_calibration_error(tgt_logits, d.target_test[1])}
        for name, fn in self.validators.items():  # target labels reach only validators that declare them (the oracle)
            labelled = getattr(fn, "uses_target_labels", False)
            seen = EvalContext(**{**vars(ctx), "target_labels": d.target_test[1]}) if labelled else ctx
            rec[f"score/{name}"] = float(fn(seen))
        return rec

    def _feature_fn(self, trainer: "Trainer") -> Callable[[str], Tensor]:
        """Lazy, cached bottleneck features for validators that need them (DEV); subsampled to 2,048 rows."""
        cache: dict[str, Tensor] = {}
        g = torch.Generator().manual_seed(0)
        sources = {"source_train": self.data.source_train[0], "source_val": self.data.source_val[0],
                   "target": self.data.target_train_x}

        def features(split: str) -> Tensor:
            if split not in cache:
                x = sources[split]
                if split != "source_val" and len(x) > 2048:
                    x = x[torch.randperm(len(x), generator=g)[:2048].to(x.device)]
                cache[split] = predict_in_batches(trainer.method.model.features, x, trainer.cfg.eval_batch_size,
                                                  trainer.amp_dtype)
            return cache[split]

        return features

    def select(self, history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """For each protocol, the eval record it picks: 'last', each validator's argmax, and 'oracle'."""
        if not history:
            return {}
        picks: dict[str, dict[str, float]] = {"last": history[-1]}
        for name in self.validators:
            picks[name] = max(history, key=lambda r: r[f"score/{name}"])  # first best on ties
        picks["oracle"] = max(history, key=lambda r: r["target_test_acc"])
        return picks
