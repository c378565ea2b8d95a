"""Linear probe: freeze the feature extractor, train only the classification head.

The features of a frozen extractor never change, so by default they are computed once per training set
(``cache_features``) and each step only runs the head on the cached rows: the probe then costs a matrix
multiply per step instead of a full forward pass. Steps whose batch carries no row index (e.g. a resumed run,
or a CL loop) fall back to the full forward.

Registered into dacl's METHODS through the ``dacl.plugins`` entry point, exactly as an outside package
would; dacl's core never imports this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.common import FineTuneMethod
from dacl.methods.base import Experience, StepState
from dacl.registry import METHODS


@METHODS.register("linear_probe")
class LinearProbe(FineTuneMethod):
    """Frozen features, trainable linear head (baselines package, via entry point)."""

    defaults = {"checkpoint": None, "cache_features": True, "cache_batch_size": 2048}

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
        self._cache: Tensor | None = None

    def before_experience(self, experience: Experience) -> None:
        self._cache = None
        if self.hparams["cache_features"] and experience.data is not None:
            x = experience.data[0]
            step = int(self.hparams["cache_batch_size"])
            with torch.no_grad():  # the frozen extractor in eval mode: exactly what training_step would compute
                self._cache = torch.cat([self.model.features(x[i:i + step]) for i in range(0, len(x), step)])

    def training_step(self, state: StepState) -> None:
        index = state.batch.index
        if self._cache is None or index is None or len(index) != len(state.batch.x):
            return super().training_step(state)
        logits = self.model.head(self._cache[index])
        state.outputs["logits"] = logits
        state.losses["cls"] = F.cross_entropy(logits, state.batch.y)

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.model.backbone.eval()  # frozen features: no dropout noise, no BatchNorm statistic drift
        self.model.bottleneck.eval()
        return self
