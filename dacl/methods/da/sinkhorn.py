"""Sinkhorn-divergence alignment (Feydy et al., AISTATS 2019) of source and target features, via geomloss.

The debiased Sinkhorn divergence interpolates between MMD (large blur) and the Wasserstein distance
(small blur), is positive and zero only for equal distributions, and has well-behaved gradients;
geomloss computes it on the device without an explicit plan.
"""
from __future__ import annotations

from torch import Tensor

from dacl.methods.base import StepState
from dacl.methods.da.common import AlignmentMethod, DomainOutputs
from dacl.registry import METHODS


@METHODS.register("sinkhorn")
class SinkhornAlignment(AlignmentMethod):
    """Source cross-entropy + trade_off x S_eps(features_s, features_t)."""

    loss_name = "sinkhorn"
    defaults = {
        "trade_off": 1.0,
        "p": 2,            # ground cost |x-y|^p / p
        "blur": 0.5,       # eps = blur^p: the length scale below which the divergence acts like MMD
        "scaling": 0.7,    # eps-scaling speed (higher: more accurate, slower)
        "normalize": True, # divide features by sqrt(d) so blur does not depend on the feature width
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        from geomloss import SamplesLoss  # lazy: only runs that use it pay the import

        hp = self.hparams
        self.divergence = SamplesLoss("sinkhorn", p=hp["p"], blur=hp["blur"], scaling=hp["scaling"], debias=True)

    def alignment_loss(self, out: DomainOutputs, state: StepState) -> Tensor:
        fs, ft = out.feats_s.float(), out.feats_t.float()
        if self.hparams["normalize"]:
            scale = fs.shape[1] ** 0.5
            fs, ft = fs / scale, ft / scale
        return self.divergence(fs, ft)
