"""Linear probe: freeze the feature extractor, train only the classification head.

Registered into dacl's METHODS through the ``dacl.plugins`` entry point, exactly as an outside package
would; dacl's core never imports this module.
"""
from __future__ import annotations


from baselines.common import FineTuneMethod, load_features
from dacl.registry import METHODS


@METHODS.register("linear_probe")
class LinearProbe(FineTuneMethod):
    """Frozen features, trainable linear head (baselines package, via entry point)."""

    defaults = {"checkpoint": None}  # path to a model.pt (e.g. from a source_only run) to probe

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        load_features(model, self.hparams["checkpoint"], "linear_probe")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.model.backbone.eval()  # frozen features: no dropout noise, no BatchNorm statistic drift
        self.model.bottleneck.eval()
        return self
