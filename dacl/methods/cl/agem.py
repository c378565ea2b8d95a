"""A-GEM (Chaudhry et al. 2019): keep a memory of past examples; after each backward, if the current
gradient g would increase the loss on a memory batch (g . g_ref < 0), project it onto the half-space
where it does not: g <- g - (g . g_ref / g_ref . g_ref) g_ref. Uses the ``after_backward`` hook.
The memory is filled per experience (``per_experience`` examples each, a random subset).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dacl.methods.base import Experience, Plugin, StepState
from dacl.methods.cl.memory import PerTaskHeads, ReservoirBuffer
from dacl.registry import PLUGINS


@PLUGINS.register("agem")
class AGEM(PerTaskHeads, Plugin):
    defaults = {"memory_size": 2000, "per_experience": 500, "batch_size": 256, "seed": 0}
    resumable_attrs = (*PerTaskHeads.resumable_attrs, "projections")

    def attach(self, method) -> None:
        super().attach(method)
        self.buffer = ReservoirBuffer(self.hparams["memory_size"], self.hparams["seed"])
        self.projections = 0

    def after_backward(self, state: StepState) -> None:
        if int(self.buffer.size) == 0:
            return
        params = [p for p in self.method.model.parameters() if p.requires_grad and p.grad is not None]
        x, y = self.buffer.sample(self.hparams["batch_size"])
        ref = torch.autograd.grad(F.cross_entropy(self.memory_logits(x, y).float(), y), params, allow_unused=True)
        ref = [torch.zeros_like(p) if r is None else r for p, r in zip(params, ref)]
        grads = [p.grad for p in params]
        dot = sum((g * r).sum() for g, r in zip(grads, ref))
        if dot < 0:
            scale = dot / sum((r * r).sum() for r in ref).clamp_min(1e-12)
            torch._foreach_add_(grads, ref, alpha=-float(scale))
            self.projections += 1

    def after_experience(self, experience: Experience) -> None:
        if experience.data is None:
            raise ValueError("A-GEM needs the experience's data to fill its memory (Experience.data)")
        x, y = experience.data
        k = min(len(x), int(self.hparams["per_experience"]))
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams["seed"] + experience.index))[:k]
        self.buffer.add(x[idx.to(x.device)], y[idx.to(y.device)])
