"""LwF (Li & Hoiem 2017): distil the previous model's predictions on the *current* inputs into the new one.

At each new experience the model is frozen as the teacher; the penalty T^2 KL(softmax(t/T) || softmax(s/T))
keeps old behaviour without storing old data. The teacher is a submodule so checkpoints keep it.
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


@PLUGINS.register("lwf")
class LwF(Plugin):
    defaults = {"weight": 1.0, "temperature": 2.0}

    def before_experience(self, experience: Experience) -> None:
        if experience.index > 0:
            self.teacher = copy.deepcopy(self.method.model).eval().requires_grad_(False)

    def before_backward(self, state: StepState) -> None:
        teacher = getattr(self, "teacher", None)
        if teacher is None:
            return
        logits = state.outputs.get("logits")
        if logits is None:
            logits = self.method.model(state.batch.x)
        with torch.no_grad():
            teacher_logits = teacher(state.batch.x)
        state.losses["lwf"] = self.hparams["weight"] * distillation_loss(logits, teacher_logits, self.hparams["temperature"])
