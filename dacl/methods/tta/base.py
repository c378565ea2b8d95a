"""What every test-time adaptation method shares: an exact snapshot of the source model to reset to.

TTA methods wrap an already trained source model. ``adapt(x)`` adapts on one unlabelled test batch and
returns its logits; ``reset()`` restores the source parameters, BatchNorm buffers and the optimizer state
bit for bit, which is what the episodic protocol relies on.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from dacl.methods.base import Method

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


class TTAMethod(Method):
    """Base: subclasses pick trainable parameters in ``configure`` and implement ``adapt``."""

    source_method = "source_only"  # `dacl run method=<tta>` first trains the source model with plain cross-entropy

    def setup(self, model: nn.Module, num_classes: int) -> None:
        super().setup(model, num_classes)
        if not batch_norms(model) and self.requires_batch_norm:
            from dacl.errors import ConfigError

            raise ConfigError(f"{self.registry_name} adapts BatchNorm layers but the model has none; "
                              "train the source model with a BN backbone (e.g. model=lenet_bn)")
        self.configure(model)
        self.optimizer = self.make_optimizer()
        self._source_model = copy.deepcopy(model.state_dict())
        self._source_optimizer = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None

    requires_batch_norm = True

    def configure(self, model: nn.Module) -> None:
        """Set requires_grad and module modes for adaptation. Default: nothing trainable."""
        model.requires_grad_(False)

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None
        hp = self.hparams
        if hp.get("optimizer", "sgd") == "adam":
            return torch.optim.Adam(params, lr=hp["lr"], betas=(0.9, 0.999))
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp.get("momentum", 0.9))

    def reset(self) -> None:
        self.model.load_state_dict(self._source_model)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self._source_optimizer)
            self.optimizer.state.clear()  # momentum buffers created since the snapshot

    def train(self, mode: bool = True) -> "TTAMethod":
        """Module modes are owned by ``configure`` (e.g. BN in train mode, dropout off); keep them."""
        return self

    def param_groups(self) -> list[dict[str, Any]]:  # TTA methods own their optimizer; the trainer never steps them
        return []
