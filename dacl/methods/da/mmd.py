"""DAN (Long et al., ICML 2015): multi-kernel MMD between source and target representations.

A family of Gaussian kernels whose bandwidths are multiples of the batch's mean squared distance
(detached, as in the paper's median heuristic), summed with equal weights. Two estimators: the
quadratic (biased, all pairs) and Gretton et al.'s linear-time one, which the DAN paper uses for
O(n) cost on large batches. Aligns the bottleneck features and, optionally, the logits (the paper
aligns every task-specific layer).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from dacl.errors import ConfigError
from dacl.methods.base import StepState
from dacl.methods.da.common import AlignmentMethod, DomainOutputs
from dacl.registry import METHODS


def _kernel_sum(sq_dist: Tensor, base: Tensor, multipliers: Sequence[float]) -> Tensor:
    return sum(torch.exp(-sq_dist / (2.0 * m * base)) for m in multipliers)  # type: ignore[return-value]


def mk_mmd(source: Tensor, target: Tensor, multipliers: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
           estimator: str = "quadratic") -> Tensor:
    """Squared multi-kernel MMD between two samples (0 when they are identical)."""
    source, target = source.float(), target.float()
    z = torch.cat([source, target])
    sq = torch.cdist(z, z).pow(2)
    base = sq.detach().mean().clamp_min(1e-8)  # bandwidth scale from the data, not learned through
    n = source.shape[0]
    if estimator == "quadratic":
        k = _kernel_sum(sq, base, multipliers)
        return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    if estimator == "linear":
        if source.shape != target.shape:
            raise ConfigError(f"linear-time MMD pairs samples: batch shapes differ, {tuple(source.shape)} vs {tuple(target.shape)}")
        # Gretton et al. 2012, Lemma 14: average of h over disjoint pairs (s_2i, s_2i+1, t_2i, t_2i+1).
        i = torch.arange(0, n - 1, 2, device=z.device)
        j, ti, tj = i + 1, i + n, i + n + 1
        k = lambda a, b: _kernel_sum(sq[a, b], base, multipliers)  # noqa: E731
        return (k(i, j) + k(ti, tj) - k(i, tj) - k(j, ti)).mean()
    raise ConfigError(f"unknown MMD estimator '{estimator}'; use 'quadratic' or 'linear'")


@METHODS.register("mmd")
class DAN(AlignmentMethod):
    """Source cross-entropy + trade_off x MK-MMD on the bottleneck features and the class scores (DAN's fc7 and fc8)."""

    loss_name = "mmd"
    defaults = {
        "trade_off": 1.0,
        "kernel_multipliers": [0.125, 0.25, 0.5, 1.0, 2.0],  # bandwidths 2^-3..2^1 x mean squared distance
        "estimator": "quadratic",  # quadratic | linear (Gretton's O(n) estimator, as in the DAN paper)
        "layer": "both",           # features | logits | both: DAN's released net puts an MMD loss on fc7 and on fc8
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        if self.hparams["estimator"] not in ("quadratic", "linear"):
            raise ConfigError(f"mmd.estimator must be 'quadratic' or 'linear', got '{self.hparams['estimator']}'")

    def alignment_loss(self, out: DomainOutputs, state: StepState) -> Tensor:
        mk = lambda a, b: mk_mmd(a, b, self.hparams["kernel_multipliers"], self.hparams["estimator"])  # noqa: E731
        return sum(mk(s, t) for s, t in self.aligned_pairs(out))
