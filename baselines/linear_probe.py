"""Linear probe: freeze the feature extractor, train only the classification head.

Registered into dacl's METHODS through the ``dacl.plugins`` entry point, exactly as an outside package
would; dacl's core never imports this module.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dacl.errors import DataError
from dacl.methods.base import Method, StepState
from dacl.registry import METHODS


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Frozen features, trainable linear head (baselines package, via entry point)."""

    defaults = {"checkpoint": None}  # path to a model.pt (e.g. from a source_only run) to probe

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        ckpt = self.hparams["checkpoint"]
        if ckpt:
            path = Path(ckpt).expanduser()
            if not path.is_file():
                raise DataError(f"linear_probe checkpoint not found: {path}; point method.checkpoint at a run's model.pt")
            state = torch.load(path, map_location="cpu", weights_only=True)
            # The probed head is re-initialised: only the features transfer.
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.model.backbone.eval()  # frozen features: no dropout noise, no BatchNorm statistic drift
        self.model.bottleneck.eval()
        return self

    def training_step(self, state: StepState) -> None:
        logits = self.model(state.batch.x)
        state.outputs["logits"] = logits
        state.losses["cls"] = F.cross_entropy(logits, state.batch.y)
