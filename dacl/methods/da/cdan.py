"""CDAN and CDAN+E (Long et al., NeurIPS 2018): adversarial alignment conditioned on predictions.

The discriminator sees the multilinear map f (x) g of features and (detached) class probabilities,
so it aligns the joint feature-label distribution instead of the marginal one DANN aligns. When
d_f x C is large the exact outer product is replaced by the paper's randomized multilinear map
(R_f f) * (R_g g) / sqrt(d) with fixed Gaussian R. CDAN+E weights each example by 1 + exp(-H(g)),
so confident (easy-to-transfer) examples dominate the domain loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dacl.errors import ConfigError
from dacl.methods.base import StepState
from dacl.methods.da.common import joint_forward
from dacl.methods.da.dann import DANN
from dacl.metrics import entropy_of_probs
from dacl.registry import METHODS


class MultilinearMap(nn.Module):
    """f (x) g, exact (flattened outer product) or randomized to ``randomized_dim`` features."""

    def __init__(self, feature_dim: int, num_classes: int, randomized_dim: int | None) -> None:
        super().__init__()
        self.randomized = randomized_dim is not None
        self.out_features = randomized_dim if self.randomized else feature_dim * num_classes
        if self.randomized:  # buffers: fixed, saved with checkpoints, never trained
            self.register_buffer("r_f", torch.randn(feature_dim, randomized_dim))
            self.register_buffer("r_g", torch.randn(num_classes, randomized_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_features)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def entropy_weights(probs: Tensor, n_source: int | None = None) -> Tensor:
    """CDAN+E's 1 + exp(-H(p)), normalised to mean 1 within the batch (so the loss scale matches CDAN). With
    ``n_source``, normalised within each domain first, as thuml/CDAN's loss.py (source and target weights each sum
    to one): each domain then carries half of the loss however confident its examples are."""
    w = 1.0 + torch.exp(-entropy_of_probs(probs, eps=1e-5))
    if n_source is not None:
        w = torch.cat([w[:n_source] / w[:n_source].sum(), w[n_source:] / w[n_source:].sum()])
    return w / w.sum() * w.shape[0]


@METHODS.register("cdan")
class CDAN(DANN):
    """Conditional adversarial DA; ``entropy=True`` gives CDAN+E (also registered as ``cdan_e``)."""

    defaults = {
        **DANN.defaults,
        "entropy": False,               # CDAN+E: entropy-conditioned example weights
        "randomized": "auto",           # auto: randomize when d_f x C > max_exact_dim; or true / false
        "randomized_dim": 1024,
        "max_exact_dim": 4096,
        "entropy_norm": "batch",        # batch | per_domain (thuml/CDAN: weights normalised within each domain)
    }

    def setup(self, model, num_classes: int) -> None:
        hp = self.hparams
        if hp["entropy_norm"] not in ("batch", "per_domain"):
            raise ConfigError(f"{self.registry_name}.entropy_norm must be 'batch' or 'per_domain', got '{hp['entropy_norm']}'")
        exact_dim = model.feature_dim * num_classes
        randomized = exact_dim > hp["max_exact_dim"] if hp["randomized"] == "auto" else bool(hp["randomized"])
        self.map = MultilinearMap(model.feature_dim, num_classes, hp["randomized_dim"] if randomized else None)
        super().setup(model, num_classes)  # DANN builds the discriminator on discriminator_input_dim()

    def discriminator_input_dim(self) -> int:
        return self.map.out_features

    def training_step(self, state: StepState) -> None:
        out = joint_forward(self, state)
        f = state.outputs["features"]  # source rows first, as joint_forward computed them
        g = F.softmax(torch.cat([out.logits_s, out.logits_t]).float(), dim=1).detach()
        per_domain = self.hparams["entropy_norm"] == "per_domain"
        weight = entropy_weights(g, out.feats_s.shape[0] if per_domain else None) if self.hparams["entropy"] else None
        self.domain_loss(self.map(f.float(), g), out.feats_s.shape[0], state, weight)


@METHODS.register("cdan_e")
class CDANE(CDAN):
    """CDAN+E: CDAN with entropy conditioning on by default."""

    defaults = {**CDAN.defaults, "entropy": True}
