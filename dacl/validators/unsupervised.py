"""Label-free validators computed from target predictions only (higher is better for every one).

- ``entropy``: negative mean prediction entropy (confident models score higher).
- ``im``: information maximisation, -E[H(p)] + H(E[p]) (confident *and* class-balanced; Liang et al. 2020).
- ``bnm``: batch nuclear norm of the prediction matrix (Cui et al. 2020), large for confident, diverse predictions.
- ``snd``: soft neighbourhood density (Saito et al. 2021): entropy of each target example's softmax-similarity
  distribution over the other examples; dense, well-clustered predictions score high (a fully collapsed
  model is one dense cluster, so SND, like entropy, cannot detect collapse; IM and BNM can).
Target *labels* are never read. Large target sets are subsampled (fixed seed) for the O(n^2) ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.registry import VALIDATORS
from dacl.validators import EvalContext


def _probs(logits: Tensor) -> Tensor:
    return F.softmax(logits.float(), dim=1)


def _subsample(x: Tensor, limit: int = 2048) -> Tensor:
    if len(x) <= limit:
        return x
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit].to(x.device)
    return x[idx]


def mean_entropy(p: Tensor) -> Tensor:
    return -(p * torch.log(p + 1e-8)).sum(1).mean()


@VALIDATORS.register("entropy")
def entropy_score(ctx: EvalContext) -> float:
    return float(-mean_entropy(_probs(ctx.target_logits)))


@VALIDATORS.register("im")
def information_maximisation(ctx: EvalContext) -> float:
    p = _probs(ctx.target_logits)
    mean = p.mean(0)
    return float(-mean_entropy(p) - (mean * torch.log(mean + 1e-8)).sum())


@VALIDATORS.register("bnm")
def batch_nuclear_norm(ctx: EvalContext) -> float:
    p = _probs(_subsample(ctx.target_logits))
    return float(torch.linalg.matrix_norm(p, ord="nuc") / len(p))


@VALIDATORS.register("snd")
def soft_neighbourhood_density(ctx: EvalContext, temperature: float = 0.05) -> float:
    p = F.normalize(_probs(_subsample(ctx.target_logits)), dim=1)
    sim = p @ p.T
    sim.fill_diagonal_(float("-inf"))  # an example is not its own neighbour
    q = F.softmax(sim / temperature, dim=1)
    return float(-(q * torch.log(q + 1e-8)).sum(1).mean())
