"""Built-in stackable plugins (regularizers that attach to any method through the hooks)."""
from __future__ import annotations

import torch

from dacl.errors import ConfigError
from dacl.methods.base import Plugin, StepState
from dacl.metrics import entropy_from_logits
from dacl.registry import PLUGINS


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax predictions."""
    return entropy_from_logits(logits).mean()


@PLUGINS.register("target_entropy")
class TargetEntropy(Plugin):
    """Entropy minimisation on unlabelled target predictions (Grandvalet & Bengio 2005), e.g. DANN+E.

    Reuses the method's target logits when it computed them; otherwise runs the model once more.
    """

    needs_target = True  # the trainer draws target batches for it even under source_only
    defaults = {"weight": 0.1}

    def before_backward(self, state: StepState) -> None:
        logits_t = state.outputs.get("logits_target")
        if logits_t is None:
            if state.batch.x_target is None:
                raise ConfigError("target_entropy needs target batches: use it with a DA benchmark")
            logits_t = self.method.model(state.batch.x_target)
        state.losses["target_entropy"] = self.hparams["weight"] * entropy(logits_t)
