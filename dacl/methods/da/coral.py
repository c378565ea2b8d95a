"""Deep CORAL (Sun & Saenko, ECCV-W 2016): match second-order statistics of source and target features.

Cheap (one d x d covariance per domain), no extra parameters, no adversary: a useful strong-and-simple
baseline. ``coral_loss`` is the paper's ||C_s - C_t||_F^2 / (4 d^2).
"""
from __future__ import annotations

from torch import Tensor

from dacl.methods.da.common import AlignmentMethod, DomainOutputs
from dacl.methods.base import StepState
from dacl.registry import METHODS


def covariance(x: Tensor) -> Tensor:
    """Unbiased feature covariance (rows are samples)."""
    xc = x - x.mean(dim=0, keepdim=True)
    return xc.T @ xc / max(1, x.shape[0] - 1)


def coral_loss(source: Tensor, target: Tensor, match_mean: bool = False) -> Tensor:
    """||C_s - C_t||_F^2 / (4 d^2) (+ ||mu_s - mu_t||^2 / d when ``match_mean``); 0 iff the statistics agree."""
    source, target = source.float(), target.float()
    d = source.shape[1]
    loss = (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)
    if match_mean:
        loss = loss + (source.mean(0) - target.mean(0)).pow(2).sum() / d
    return loss


@METHODS.register("coral")
class DeepCORAL(AlignmentMethod):
    """Source cross-entropy + trade_off x CORAL loss on the class scores (the authors' fc8), or the features."""

    loss_name = "coral"
    defaults = {
        "trade_off": 0.8,       # weight of the CORAL term: loss_weight 0.8 in the authors' released Office-31 net
        "layer": "logits",      # logits (the authors' fc8) | features (the bottleneck, as TLlib) | both
        "match_mean": False,    # also align feature means (TLlib's variant); the paper aligns covariances only
    }

    def alignment_loss(self, out: DomainOutputs, state: StepState) -> Tensor:
        return sum(coral_loss(s, t, self.hparams["match_mean"]) for s, t in self.aligned_pairs(out))
