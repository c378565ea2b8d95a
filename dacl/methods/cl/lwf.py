"""LwF (Li & Hoiem 2017): distil the previous model's predictions on the *current* inputs into the new one.

At each new experience the model is frozen as the teacher. The penalty T^2 KL(softmax(t/T) || softmax(s/T))
is taken over the *old* tasks' outputs, as in van de Ven & Tolias 2019: in task-IL one term per old task
head (averaged), in class- and domain-IL one term over every class seen before. ``weight: auto`` weighs
new vs old as 1 : (number of old tasks), their 1/t balance. The teacher is a submodule so checkpoints keep it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.methods.base import Experience, Plugin, StepState
from dacl.registry import PLUGINS


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 KL(teacher || student) at temperature T (Hinton et al. 2015); 0 iff the distributions agree."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def unmasked(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier under a TaskMask wrapper (all logits), or the model itself."""
    return getattr(model, "model", model) if hasattr(model, "active") else model


@PLUGINS.register("lwf")
class LwF(Plugin):
    defaults = {"weight": 1.0, "temperature": 2.0}

    def before_experience(self, experience: Experience) -> None:
        old = getattr(self, "_old_classes", [])
        if experience.index > 0:
            self.teacher = copy.deepcopy(unmasked(self.method.model)).eval().requires_grad_(False)
            merged = sorted({c for group in old for c in group})
            self._groups = [torch.tensor(g) for g in old] if experience.scenario == "task" else \
                ([torch.tensor(merged)] if merged else [])
        if experience.classes is not None:
            self._old_classes = [*old, tuple(experience.classes)]
        self._n_old = experience.index

    def before_backward(self, state: StepState) -> None:
        teacher = getattr(self, "teacher", None)
        if teacher is None:
            return
        x = state.batch.x
        model = self.method.model
        cached = getattr(model, "last_unmasked", None)  # TaskMask: raw logits of its last input
        if cached is not None and cached[0] is x and cached[1].requires_grad:
            student = cached[1]
        elif cached is None and state.outputs.get("logits") is not None:
            student = state.outputs["logits"]
        else:
            student = unmasked(model)(x)  # the current task's mask would hide the old heads
        with torch.no_grad():
            teacher_logits = teacher(x)
        groups = getattr(self, "_groups", None) or [None]
        loss = sum(distillation_loss(student if g is None else student[:, g.to(x.device)],
                                     teacher_logits if g is None else teacher_logits[:, g.to(x.device)],
                                     self.hparams["temperature"]) for g in groups) / len(groups)
        weight = self._n_old if self.hparams["weight"] == "auto" else float(self.hparams["weight"])
        state.losses["lwf"] = weight * loss
