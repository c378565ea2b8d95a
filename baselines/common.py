"""Shared by the fine-tuning baselines: the supervised step, loading pre-trained features, BatchNorm freezing."""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import nn

from dacl.engine.weights import load_weights
from dacl.errors import DataError
from dacl.methods.base import Method, StepState


class FineTuneMethod(Method):
    """Supervised cross-entropy on the labelled batch; the baselines differ only in what they freeze or add.

    A baseline whose defaults set ``freeze_bn_stats`` keeps the pre-trained BatchNorm statistics of the
    features (backbone + bottleneck) in training mode too: the frozen weights were fitted to them."""

    def setup(self, model: nn.Module, num_classes: int) -> None:
        """Every baseline with a ``checkpoint`` option starts from that run's features (head re-initialised)."""
        super().setup(model, num_classes)
        load_features(model, self.hparams.get("checkpoint"), self.registry_name)

    def train(self, mode: bool = True) -> "FineTuneMethod":
        super().train(mode)
        if mode and self.hparams.get("freeze_bn_stats"):
            for m in [*self.model.backbone.modules(), *self.model.bottleneck.modules()]:
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def training_step(self, state: StepState) -> None:
        logits = self.model(state.batch.x)
        state.outputs["logits"] = logits
        state.losses["cls"] = F.cross_entropy(logits, state.batch.y)


def load_features(model: nn.Module, checkpoint: str | None, method: str) -> None:
    """Load a dacl run's weights (``model.safetensors``, e.g. of a source_only run on MNIST) into ``model`` except its head, which is
    re-initialised for the new task: only the features transfer."""
    if not checkpoint:
        return
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DataError(f"{method} checkpoint not found: {path}; point method.checkpoint at a run's model.safetensors")
    state = load_weights(path)
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
    if unexpected or [k for k in missing if not k.startswith("head.")]:
        raise DataError(f"{method} checkpoint {path} does not match the model (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}): build the same model= config the checkpoint was trained with")


def linear_names(module: nn.Module) -> list[str]:
    """Names of every Linear inside ``module`` (peft target names for CNN/MLP backbones and bottlenecks)."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
