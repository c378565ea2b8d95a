"""BitFit (Ben Zaken et al. 2022): train only the bias terms of the pre-trained network, plus the new head.

Every parameter named ``*.bias`` trains (attention, MLP, LayerNorm/BatchNorm and convolution biases alike, as
in the paper's code); weights stay frozen. BatchNorm running statistics are frozen too (``freeze_bn_stats``),
since the features they normalise belong to the pre-trained network.
"""
from __future__ import annotations


from baselines.common import FineTuneMethod
from dacl.errors import ConfigError
from dacl.registry import METHODS


@METHODS.register("bitfit")
class BitFit(FineTuneMethod):
    """Bias-only fine-tuning + trainable head (baselines package, via entry point)."""

    defaults = {"checkpoint": None, "freeze_bn_stats": True}

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head.") or name.endswith(".bias"))
        if not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head.")):
            raise ConfigError("bitfit: the backbone has no bias terms to train")
