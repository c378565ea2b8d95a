"""Pseudo-label self-training for DA: FixMatch-style consistency (Sohn et al. 2020) on the target domain.

Target examples whose weakly augmented view is predicted with confidence >= threshold get that
prediction as a label for their strongly augmented view. Options:
- ``class_balanced``: per-class thresholds, FlexMatch-style (Zhang et al. 2021): a class that is rarely
  predicted confidently gets a lower bar (down to ``min_threshold``), so it is not starved of pseudo-labels.
- ``rounds`` > 0: classic iterative self-training. The first 1/(rounds+1) of training is source-only;
  at each round boundary the current model is frozen as the teacher that labels the target set for the
  next round (retrain, re-label, repeat). ``rounds`` = 0 labels online with the model being trained.
- AdaMatch's three changes for DA (Berthelot et al. 2022), registered together as ``adamatch``:
  ``distribution_alignment`` rescales target probabilities by (mean source prediction / mean target
  prediction), ``relative_threshold`` multiplies the threshold by the mean source confidence, and
  ``rampup`` grows the pseudo-label weight as 0.5 - cos(min(pi, 2 pi p)) / 2 over the first half.
  Plain online FixMatch collapsed to one target class on MNIST->USPS (see paper_results/digits).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from dacl.data.augment import AUGMENTATIONS
from dacl.methods.base import Method, StepState
from dacl.registry import METHODS


@METHODS.register("self_training")
class SelfTraining(Method):
    needs_target = True
    defaults = {
        "threshold": 0.95,          # confidence needed for a pseudo-label
        "trade_off": 1.0,           # weight of the pseudo-label loss
        "class_balanced": False,    # FlexMatch-style per-class thresholds
        "balance_momentum": 0.99,   # EMA of the per-class confident-prediction rate
        "min_threshold": 0.8,       # class-balanced thresholds range from this (rare classes) to threshold
        "rounds": 0,                # 0: online labelling; k: k re-labelling rounds with a frozen teacher
        "source_augment": "none",   # none | weak | strong (weak hurt on our synthetic shift)
        "distribution_alignment": False,  # AdaMatch: align the mean target prediction with the source one
        "relative_threshold": False,      # AdaMatch: threshold x mean source confidence
        "rampup": False,                  # AdaMatch: warm the pseudo-label weight up over half of training
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        self.register_buffer("class_rate", torch.zeros(num_classes))  # buffers: survive checkpoints
        self.register_buffer("teacher_round", torch.zeros((), dtype=torch.long))  # 0: no teacher yet
        if self.hparams["rounds"]:
            self.teacher = copy.deepcopy(model).requires_grad_(False)  # a submodule, so resume is exact

    def thresholds(self) -> torch.Tensor:
        tau = self.hparams["threshold"]
        if not self.hparams["class_balanced"] or self.class_rate.max() <= 0:
            return torch.full_like(self.class_rate, tau)
        # FlexMatch's warm-up: while few examples are confident, the unconfident share is the yardstick.
        beta = self.class_rate / torch.maximum(self.class_rate.max(), 1.0 - self.class_rate.sum())
        # Rarely-confident classes get a lower bar, but never below min_threshold (a lower floor, or
        # FlexMatch's unbounded convex mapping, collapsed the target onto one class in our tests).
        low = self.hparams["min_threshold"]
        return low + (tau - low) * beta

    def _refresh_teacher(self, state: StepState) -> None:
        """At each round boundary, freeze the current model as the teacher for the round that starts."""
        current_round = int(state.progress * (self.hparams["rounds"] + 1))
        if current_round >= 1 and current_round != int(self.teacher_round):
            self.teacher.load_state_dict(self.model.state_dict())
            self.teacher_round.fill_(current_round)

    def training_step(self, state: StepState) -> None:
        b = state.batch
        n_s = b.x.shape[0]
        rounds = self.hparams["rounds"]
        if rounds:
            self._refresh_teacher(state)
        xs = AUGMENTATIONS[self.hparams["source_augment"]](b.x)
        if rounds and int(self.teacher_round) == 0:  # round 0: source-only warm-up
            logits = self.model(xs)
            state.outputs["logits"], state.losses["cls"] = logits, F.cross_entropy(logits, b.y)
            return
        x_weak, x_strong = AUGMENTATIONS["weak"](b.x_target), AUGMENTATIONS["strong"](b.x_target)
        # Online: the student labels its own weak view (same forward, as in FixMatch). Rounds: the teacher does.
        logits = self.model(torch.cat([xs, x_strong] if rounds else [xs, x_strong, x_weak]))
        logits_s, logits_strong = logits[:n_s], logits[n_s:n_s + len(x_strong)]
        state.outputs["logits"] = logits_s
        state.losses["cls"] = F.cross_entropy(logits_s, b.y)
        with torch.no_grad():
            teacher_logits = self.teacher.eval()(x_weak) if rounds else logits[n_s + len(x_strong):]
            probs = F.softmax(teacher_logits.float(), dim=1)
            source_probs = F.softmax(logits_s.detach().float(), dim=1)
            if self.hparams["distribution_alignment"]:
                probs = probs * (source_probs.mean(0) / probs.mean(0).clamp_min(1e-6))
                probs = probs / probs.sum(1, keepdim=True)
            conf, pseudo = probs.max(dim=1)
            thresholds = self.thresholds()
            if self.hparams["relative_threshold"]:
                thresholds = thresholds * source_probs.max(1).values.mean()
            mask = (conf >= thresholds[pseudo]).float()
            if self.hparams["class_balanced"]:
                confident = pseudo[conf >= self.hparams["threshold"]]
                rate = torch.bincount(confident, minlength=self.num_classes).float() / len(pseudo)
                m = self.hparams["balance_momentum"]
                self.class_rate.mul_(m).add_((1 - m) * rate)
        per_example = F.cross_entropy(logits_strong.float(), pseudo, reduction="none")
        weight = self.hparams["trade_off"]
        if self.hparams["rampup"]:
            weight *= 0.5 - math.cos(min(math.pi, 2 * math.pi * state.progress)) / 2
        state.losses["pseudo"] = weight * (per_example * mask).mean()
        state.logs["mask_rate"] = mask.mean()


@METHODS.register("adamatch")
class AdaMatch(SelfTraining):
    """Self-training with AdaMatch's distribution alignment, relative threshold and weight ramp-up (tau 0.9)."""

    defaults = {**SelfTraining.defaults, "threshold": 0.9, "distribution_alignment": True, "relative_threshold": True,
                "rampup": True}
