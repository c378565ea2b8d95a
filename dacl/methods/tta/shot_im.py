"""SHOT-IM (Liang et al., ICML 2020): source-free adaptation by information maximisation.

The source classifier head is frozen (it encodes the source hypothesis); the feature extractor is
trained so target predictions are individually confident (low entropy) and globally diverse (high
entropy of the mean prediction). ``cluster_weight`` > 0 adds SHOT's self-supervised pseudo-labels:
prediction-weighted class centroids in feature space, one refinement round, nearest centroid by cosine
distance (computed per test batch here, the online setting).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dacl.methods.tta.base import TTAMethod
from dacl.metrics import entropy_from_logits, entropy_of_probs
from dacl.registry import METHODS


def centroid_pseudo_labels(feats: Tensor, probs: Tensor) -> Tensor:
    """SHOT's clustering: weighted centroids -> nearest (cosine) -> centroids of the hard labels -> nearest."""
    f = F.normalize(feats, dim=1)
    centroids = probs.T @ f / probs.sum(0, keepdim=True).T.clamp_min(1e-8)
    labels = (f @ F.normalize(centroids, dim=1).T).argmax(1)
    onehot = F.one_hot(labels, probs.shape[1]).float()
    centroids = onehot.T @ f / onehot.sum(0, keepdim=True).T.clamp_min(1e-8)
    return (f @ F.normalize(centroids, dim=1).T).argmax(1)


@METHODS.register("shot_im")
class SHOTIM(TTAMethod):
    requires_batch_norm = False
    defaults = {"lr": 1e-3, "optimizer": "sgd", "momentum": 0.9, "steps": 1, "diversity_weight": 1.0,
                "cluster_weight": 0.0}

    def configure(self, model: nn.Module) -> None:
        super().configure(model)
        model.eval()  # dropout off
        for name, module in model.named_children():
            if name != "head":
                module.requires_grad_(True)
                module.train(any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()))
        for m in model.modules():
            if isinstance(m, nn.Dropout | nn.Dropout2d):
                m.eval()

    @torch.enable_grad()
    def adapt(self, x: Tensor) -> Tensor:
        hp = self.hparams
        for _ in range(hp["steps"]):
            logits, feats = self.model.forward_with_features(x)
            probs = F.softmax(logits.float(), dim=1)
            loss = entropy_from_logits(logits).mean() - hp["diversity_weight"] * entropy_of_probs(probs.mean(0), eps=1e-5)
            if hp["cluster_weight"]:
                pseudo = centroid_pseudo_labels(feats.detach().float(), probs.detach())
                loss = loss + hp["cluster_weight"] * F.cross_entropy(logits.float(), pseudo)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return logits.detach()
