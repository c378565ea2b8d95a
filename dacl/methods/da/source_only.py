"""Source-only training: cross-entropy on labelled source data; the no-adaptation baseline."""
from __future__ import annotations

import torch.nn.functional as F

from dacl.methods.base import Method, StepState
from dacl.registry import METHODS


@METHODS.register("source_only")
class SourceOnly(Method):
    """Cross-entropy on labelled source data only (no adaptation)."""

    defaults = {"label_smoothing": 0.0}

    def training_step(self, state: StepState) -> None:
        logits = self.model(state.batch.x)
        state.outputs["logits"] = logits
        state.losses["cls"] = F.cross_entropy(logits, state.batch.y, label_smoothing=self.hparams["label_smoothing"])
