"""LwF (Li & Hoiem 2017): distil the previous model's predictions on the *current* inputs into the new one.

At each new experience the model is frozen as the teacher. The penalty T^2 KL(softmax(t/T) || softmax(s/T))
is taken over the *old* tasks' outputs: in task-IL one term per old task head (averaged, as in van de Ven &
Tolias 2019), in class- and domain-IL one term over every class seen before. ``weight: auto`` weighs
new vs old as 1 : (number of old tasks), their 1/t balance. The teacher is a submodule so checkpoints keep it.

``targets`` (class-IL only): ``old_only`` (Li & Hoiem, Avalanche; the default) compares teacher and student
softmaxes over the old classes alone; ``zero_padded`` is van de Ven & Tolias' code (encoder.py train_a_batch,
``n_classes_to_consider = y_hat.size(1)``): the student's softmax spans every class seen so far and the teacher's
soft targets get zeros for this task's new classes, so distillation also pulls new-class mass down on current
inputs. On Split MNIST it keeps the first task and learns little after it (paper_results/continual notes).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.methods.base import Experience, Plugin, StepState
from dacl.registry import PLUGINS


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                      class_mean: bool = False) -> Tensor:
    """T^2 KL(teacher || student) at temperature T (Hinton et al. 2015); 0 iff the distributions agree.
    A student wider than the teacher gets zero targets on its extra (trailing) columns (van de Ven & Tolias).
    ``class_mean`` averages over classes as well as examples: van de Ven & Tolias' code until commit 26f00db
    (2019-05-17, "summation over classes was omitted"), 1/C of the summed form."""
    extra = student_logits.shape[1] - teacher_logits.shape[1]
    if extra < 0:  # F.pad with a negative width would silently crop the teacher's distribution
        raise ValueError(f"distillation: student has {student_logits.shape[1]} classes, fewer than the teacher's "
                         f"{teacher_logits.shape[1]}; pass the teacher's columns the student should match")
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    target = F.softmax(teacher_logits.float() / t, dim=1)
    target = F.pad(target, (0, extra))
    loss = t * t * F.kl_div(log_s, target, reduction="batchmean")
    return loss / student_logits.shape[1] if class_mean else loss


def unmasked(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier under a TaskMask wrapper (all logits), or the model itself."""
    return getattr(model, "model", model) if hasattr(model, "active") else model


@PLUGINS.register("lwf")
class LwF(Plugin):
    defaults = {"weight": 1.0, "temperature": 2.0, "targets": "old_only", "kd_reduction": "sum"}
    resumable_attrs = ("_groups", "_old_classes", "_padded", "_n_old")

    def create_missing_modules(self, names: set[str]) -> None:
        if "teacher" in names:  # its weights come from the checkpoint; the copy only gives it the right shapes
            self.teacher = copy.deepcopy(unmasked(self.method.model)).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LwF":
        """The teacher stays in eval mode whatever the loop sets (method.train() reaches every submodule): its
        targets must not carry dropout noise or move BatchNorm statistics."""
        super().train(mode)
        teacher = getattr(self, "teacher", None)
        if teacher is not None:
            teacher.eval()
        return self

    def before_experience(self, experience: Experience) -> None:
        old = getattr(self, "_old_classes", [])
        if experience.index > 0:
            self.teacher = copy.deepcopy(unmasked(self.method.model)).eval().requires_grad_(False)
            merged = sorted({c for group in old for c in group})
            self._groups = [torch.tensor(g) for g in old] if experience.scenario == "task" else \
                ([torch.tensor(merged)] if merged else [])
        if self.hparams["targets"] not in ("old_only", "zero_padded"):
            raise ValueError(f"lwf targets '{self.hparams['targets']}' unknown; choose old_only or zero_padded")
        if self.hparams["kd_reduction"] not in ("sum", "class_mean"):
            raise ValueError(f"lwf kd_reduction '{self.hparams['kd_reduction']}' unknown; choose sum or class_mean")
        merged_old = {c for group in old for c in group}
        self._padded = None
        if self.hparams["targets"] == "zero_padded" and experience.scenario == "class" and experience.index > 0:
            new = [c for c in (experience.classes or ()) if c not in merged_old]
            self._padded = (torch.tensor(sorted(merged_old)), torch.tensor(sorted(merged_old) + new))
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
        weight = self._n_old if self.hparams["weight"] == "auto" else float(self.hparams["weight"])
        t, class_mean = self.hparams["temperature"], self.hparams["kd_reduction"] == "class_mean"
        if getattr(self, "_padded", None) is not None:  # van de Ven & Tolias' class-IL targets
            old_cols, seen_cols = (c.to(x.device) for c in self._padded)
            state.losses["lwf"] = weight * distillation_loss(student[:, seen_cols], teacher_logits[:, old_cols], t,
                                                             class_mean)
            return
        groups = getattr(self, "_groups", None) or [None]
        loss = sum(distillation_loss(student if g is None else student[:, g.to(x.device)],
                                     teacher_logits if g is None else teacher_logits[:, g.to(x.device)], t,
                                     class_mean) for g in groups) / len(groups)
        state.losses["lwf"] = weight * loss
