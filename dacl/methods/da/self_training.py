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
- Guards against confirmation collapse, on by default (plain online FixMatch, registered as ``fixmatch``, gave
  every MNIST->USPS target example one class by step ~500): ``warmup`` (a source-only first share of training,
  as classic self-training starts from a source model), ``ema_teacher`` (pseudo-labels from an exponential
  moving average of the student in inference mode, as the self-ensembling teacher of French et al. 2018:
  no dropout on the labelling forward, slow to follow the student's mistakes) and ``distribution_alignment``.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from dacl.data.augment import AUGMENTATIONS
from dacl.errors import ConfigError, check_number
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
        "distribution_alignment": True,   # AdaMatch: align the mean target prediction with the source one
        "relative_threshold": False,      # AdaMatch: threshold x mean source confidence
        "rampup": False,                  # AdaMatch: warm the pseudo-label weight up over half of training
        "warmup": 0.1,              # share of training that is source-only before any pseudo-label
        "ema_teacher": 0.99,        # > 0: pseudo-labels from an EMA of the student (this momentum), in eval mode
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        self.register_buffer("class_rate", torch.zeros(num_classes))  # buffers: survive checkpoints
        self.register_buffer("teacher_round", torch.zeros((), dtype=torch.long))  # 0: no teacher yet
        hp = self.hparams
        check_number(f"{self.registry_name}.ema_teacher", hp["ema_teacher"], minimum=0.0, below=1.0)
        check_number(f"{self.registry_name}.warmup", hp["warmup"], minimum=0.0, below=1.0)
        if hp["rounds"] and hp["ema_teacher"]:
            raise ConfigError(f"{self.registry_name}: rounds and ema_teacher are two kinds of teacher; set one of them")
        if hp["rounds"] or hp["ema_teacher"]:
            self.teacher = copy.deepcopy(model).requires_grad_(False)  # a submodule, so resume is exact

    def after_update(self, state: StepState) -> None:
        """The EMA teacher follows the student after every update (its BatchNorm statistics are copied)."""
        momentum = self.hparams["ema_teacher"]
        if momentum:
            with torch.no_grad():
                teacher, student = list(self.teacher.parameters()), list(self.model.parameters())
                torch._foreach_lerp_(teacher, student, 1.0 - momentum)
                for t, s in zip(self.teacher.buffers(), self.model.buffers()):
                    t.copy_(s)

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
        warming = state.progress < self.hparams["warmup"]
        if warming or (rounds and int(self.teacher_round) == 0):  # source-only warm-up (round 0 of rounds)
            logits = self.model(xs)
            state.outputs["logits"], state.losses["cls"] = logits, F.cross_entropy(logits, b.y)
            return
        x_weak, x_strong = AUGMENTATIONS["weak"](b.x_target), AUGMENTATIONS["strong"](b.x_target)
        # Online: the student labels its own weak view (same forward, as in FixMatch). Otherwise the teacher does.
        teacher = rounds or self.hparams["ema_teacher"]
        logits = self.model(torch.cat([xs, x_strong] if teacher else [xs, x_strong, x_weak]))
        logits_s, logits_strong = logits[:n_s], logits[n_s:n_s + len(x_strong)]
        state.outputs["logits"] = logits_s
        state.losses["cls"] = F.cross_entropy(logits_s, b.y)
        with torch.no_grad():
            teacher_logits = self.teacher.eval()(x_weak) if teacher else logits[n_s + len(x_strong):]
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


@METHODS.register("fixmatch")
class FixMatch(SelfTraining):
    """Plain online FixMatch on the target (threshold 0.95, the student labels its own weak view): no guard."""

    defaults = {**SelfTraining.defaults, "distribution_alignment": False, "warmup": 0.0, "ema_teacher": 0.0}


@METHODS.register("adamatch")
class AdaMatch(SelfTraining):
    """Self-training with AdaMatch's distribution alignment, relative threshold and weight ramp-up (tau 0.9)."""

    defaults = {**SelfTraining.defaults, "threshold": 0.9, "distribution_alignment": True, "relative_threshold": True,
                "rampup": True, "warmup": 0.0, "ema_teacher": 0.0}
