"""Tent (Wang et al., ICLR 2021): minimise prediction entropy on test batches, updating only BN affine
parameters and normalising with test-batch statistics.

Everything else (conv/linear weights, BN running buffers) stays bitwise equal to the source model:
BN layers run in train mode with ``track_running_stats`` off, so they normalise with batch statistics
and never touch the source buffers (not even ``num_batches_tracked``); dropout stays off.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dacl.methods.tta.base import TTAMethod, batch_norms
from dacl.metrics import entropy_from_logits
from dacl.registry import METHODS


@METHODS.register("tent")
class Tent(TTAMethod):
    defaults = {"lr": 1e-3, "optimizer": "adam", "momentum": 0.9, "steps": 1}

    def configure(self, model: nn.Module) -> None:
        super().configure(model)
        model.eval()
        for bn in batch_norms(model):
            bn.train()
            bn.track_running_stats = False  # batch statistics; the source buffers stay as they are
            if bn.affine:
                bn.weight.requires_grad_(True)
                bn.bias.requires_grad_(True)

    @torch.enable_grad()
    def adapt(self, x: Tensor) -> Tensor:
        for _ in range(self.hparams["steps"]):
            logits = self.model(x)  # the prediction is made with the parameters before this update (as Tent)
            loss = entropy_from_logits(logits).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return logits.detach()
