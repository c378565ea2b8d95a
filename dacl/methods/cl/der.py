"""Dark Experience Replay (Buzzega et al. 2020) as a plugin: DER replays stored logits, DER++ also stored labels.

Reading of the authors' code (aimagelab/mammoth, models/derpp.py): every training batch is offered to a reservoir
memory together with the logits the network produced for it *before* the update; each step adds
``alpha * MSE(f(x'), z')`` on one memory batch and, for DER++, ``beta * CE(f(x''), y'')`` on a second, independent
one. The stored and replayed logits are the network's full (unmasked) outputs, as mammoth trains class-IL without a
mask: where the loop masks unseen classes (-inf), the stored logits come from one extra no-grad forward of the
unmasked classifier. ``beta=0`` is DER.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dacl import distributed
from dacl.methods.base import Plugin, StepState
from dacl.methods.cl.lwf import unmasked
from dacl.methods.cl.memory import PerTaskHeads, ReservoirBuffer
from dacl.registry import PLUGINS


@PLUGINS.register("der")
class DarkExperienceReplay(PerTaskHeads, Plugin):
    """DER / DER++: replay of the logits stored with each example (MSE, alpha) and, with beta > 0, of its label."""

    # mammoth (utils/best_args.py at 0d727a7), DER++ on seq-cifar10 with a 500-example buffer: alpha 0.2, beta 0.5
    defaults = {"memory_size": 500, "batch_size": 32, "alpha": 0.2, "beta": 0.5, "seed": 0}

    def attach(self, method) -> None:
        super().attach(method)
        self.buffer = ReservoirBuffer(self.hparams["memory_size"], self.hparams["seed"])

    def before_backward(self, state: StepState) -> None:
        logits = state.outputs.get("logits")
        if logits is None or getattr(self.method.model, "active", None) is not None:  # masked: the unmasked outputs
            with torch.no_grad():
                logits = unmasked(self.method.model)(state.batch.x)
        self._pending = logits.detach().float()
        if int(self.buffer.size) == 0:
            return
        ctx = distributed.current()
        x, _, z = (ctx.split(t) for t in self.buffer.sample_with_extra(self.hparams["batch_size"]))
        state.losses["der_logits"] = self.hparams["alpha"] * F.mse_loss(unmasked(self.method.model)(x).float(), z)
        if self.hparams["beta"]:
            x2, y2, _ = (ctx.split(t) for t in self.buffer.sample_with_extra(self.hparams["batch_size"]))
            state.losses["der_labels"] = self.hparams["beta"] * F.cross_entropy(self.memory_logits(x2, y2).float(), y2)

    def after_update(self, state: StepState) -> None:
        ctx = distributed.current()
        self.buffer.add(distributed.all_gather_cat(state.batch.x.detach(), ctx),
                        distributed.all_gather_cat(state.batch.y.detach(), ctx),
                        distributed.all_gather_cat(self._pending, ctx))
