"""BN-adapt / AdaBN (Li et al. 2017; Schneider et al. 2020): replace BatchNorm statistics by target ones.

No gradients: BN layers re-estimate their running mean/variance as the cumulative average over the test
batches seen since the last reset, and predictions use those statistics.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dacl.methods.tta.base import TTAMethod, batch_norms
from dacl.registry import METHODS


@METHODS.register("bn_adapt")
class BNAdapt(TTAMethod):
    defaults = {"momentum": None}  # None: cumulative average since reset (AdaBN); a float: exponential average

    def configure(self, model: nn.Module) -> None:
        super().configure(model)
        model.eval()
        self._fresh = True

    def reset(self) -> None:
        super().reset()
        self._fresh = True

    @torch.no_grad()
    def adapt(self, x: Tensor) -> Tensor:
        bns = batch_norms(self.model)
        for bn in bns:
            if self._fresh and self.hparams["momentum"] is None:
                bn.reset_running_stats()  # forget the source statistics entirely (AdaBN)
            bn.momentum = self.hparams["momentum"]
            bn.train()
        self._fresh = False
        self.model(x)  # updates the running statistics only
        for bn in bns:
            bn.eval()
        return self.model(x)
