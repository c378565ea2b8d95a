"""Label-free validators computed from target predictions only (higher is better for every one).

- ``entropy``: negative mean prediction entropy (confident models score higher).
- ``im``: information maximisation, -E[H(p)] + H(E[p]) (confident *and* class-balanced; Liang et al. 2020).
- ``bnm``: batch nuclear norm of the prediction matrix (Cui et al. 2020), large for confident, diverse predictions.
- ``snd``: soft neighbourhood density (Saito et al. 2021): entropy of each target example's softmax-similarity
  distribution over the other examples; dense, well-clustered predictions score high (a fully collapsed
  model is one dense cluster, so SND, like entropy, cannot detect collapse; IM and BNM can).
- ``dev``: deep embedded validation (You et al. 2019): importance-weighted source-validation loss.
Target *labels* are never read (the trainer does not even pass them). Large sets are subsampled with a fixed seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.metrics import entropy_from_logits, entropy_of_probs
from dacl.registry import VALIDATORS
from dacl.validators import EvalContext


def _probs(logits: Tensor) -> Tensor:
    return F.softmax(logits.float(), dim=1)


def _subsample(x: Tensor, limit: int = 2048) -> Tensor:
    if len(x) <= limit:
        return x
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit].to(x.device)
    return x[idx]


@VALIDATORS.register("entropy")
def entropy_score(ctx: EvalContext) -> float:
    """negative mean entropy of target predictions"""
    return float(-entropy_from_logits(ctx.target_logits).mean())


@VALIDATORS.register("im")
def information_maximisation(ctx: EvalContext) -> float:
    """information maximisation on target: -E[H(p)] + H(E[p])"""
    return float(-entropy_from_logits(ctx.target_logits).mean() + entropy_of_probs(_probs(ctx.target_logits).mean(0)))


@VALIDATORS.register("bnm")
def batch_nuclear_norm(ctx: EvalContext) -> float:
    """batch nuclear norm of target predictions"""
    p = _probs(_subsample(ctx.target_logits))
    return float(torch.linalg.matrix_norm(p, ord="nuc") / len(p))


@VALIDATORS.register("snd")
def soft_neighbourhood_density(ctx: EvalContext, temperature: float = 0.05) -> float:
    """soft neighbourhood density of target predictions"""
    p = F.normalize(_probs(_subsample(ctx.target_logits)), dim=1)
    sim = p @ p.T
    sim.fill_diagonal_(float("-inf"))  # an example is not its own neighbour
    q = F.softmax(sim / temperature, dim=1)
    return float(-(q * torch.log(q + 1e-8)).sum(1).mean())


def dev_risk(val_losses: Tensor, weights: Tensor) -> Tensor:
    """DEV's control-variate estimate of the target risk from importance-weighted source validation losses."""
    wl = weights * val_losses
    var = weights.var()
    eta = -torch.cov(torch.stack([wl, weights]))[0, 1] / var if var > 1e-12 else torch.zeros(())
    return wl.mean() + eta * weights.mean() - eta


@VALIDATORS.register("dev")
def deep_embedded_validation(ctx: EvalContext) -> float:
    """deep embedded validation: importance-weighted source-validation loss, negated

    DEV (You et al., ICML 2019): weight each source-validation loss by p(target|f)/p(source|f) from a logistic
    domain classifier on bottleneck features (source train vs unlabelled target), then control-variate the mean.
    Returns the negative risk (higher is better)."""
    from sklearn.linear_model import LogisticRegression

    fs, fv, ft = (ctx.features(s).float().cpu().numpy() for s in ("source_train", "source_val", "target"))
    import numpy as np

    clf = LogisticRegression(max_iter=1000).fit(np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))])
    p_t = torch.as_tensor(clf.predict_proba(fv)[:, 1]).clamp(1e-4, 1 - 1e-4)
    weights = (p_t / (1 - p_t) * len(fs) / len(ft)).float()
    losses = F.cross_entropy(ctx.source_val_logits.float().cpu(), ctx.source_val_labels.cpu(), reduction="none")
    return float(-dev_risk(losses, weights))


deep_embedded_validation.needs_features = True  # type: ignore[attr-defined]
