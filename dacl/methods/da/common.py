"""What most feature-level DA methods share: one forward over source+target and a weighted alignment term.

A subclass of ``AlignmentMethod`` writes only ``alignment_loss``; the forward, the source cross-entropy,
the shared outputs (so stacked plugins such as ``target_entropy`` reuse the target logits) and the
trade-off live here once.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.errors import ConfigError
from dacl.methods.base import Method, StepState


@dataclass
class DomainOutputs:
    logits_s: Tensor
    logits_t: Tensor
    feats_s: Tensor
    feats_t: Tensor


def joint_forward(method: Method, state: StepState, layer: str = "bottleneck") -> DomainOutputs:
    """One forward over cat(source, target): half the kernel launches, and BatchNorm sees both domains. ``layer``:
    whose features come back (the bottleneck's, or the backbone's for a discriminator on the conv features)."""
    b = state.batch
    if b.x_target is None:
        raise ConfigError(f"method '{method.registry_name}' needs unlabelled target batches: use it with a DA benchmark")
    n_s = b.x.shape[0]
    x = torch.cat([b.x, b.x_target])
    logits, feats = (method.model.forward_with_features(x) if layer == "bottleneck"
                     else method.model.forward_with_features(x, layer=layer))
    out = DomainOutputs(logits[:n_s], logits[n_s:], feats[:n_s], feats[n_s:])
    state.outputs.update(logits=out.logits_s, logits_target=out.logits_t, features=feats)
    state.losses["cls"] = F.cross_entropy(out.logits_s, b.y)
    return out


# Which layer a discrepancy compares: the bottleneck features, the class scores (the input of the softmax), or both
# (DAN adapts fc7 and fc8; Deep CORAL's released nets put the loss on fc8).
ALIGNED_LAYERS = {"features": ("feats",), "logits": ("logits",), "both": ("feats", "logits")}


class AlignmentMethod(Method, metaclass=ABCMeta):
    """Source cross-entropy + ``trade_off`` x a discrepancy between source and target (MMD, CORAL, OT, ...)."""

    needs_target = True
    loss_name = "align"

    def aligned_pairs(self, out: DomainOutputs) -> list[tuple[Tensor, Tensor]]:
        """(source, target) activations of the layer(s) named by the ``layer`` hyper-parameter."""
        layer = self.hparams.get("layer", "features")
        if layer not in ALIGNED_LAYERS:
            raise ConfigError(f"{self.registry_name}.layer must be one of {sorted(ALIGNED_LAYERS)}, got '{layer}'")
        return [(getattr(out, f"{name}_s"), getattr(out, f"{name}_t")) for name in ALIGNED_LAYERS[layer]]

    @abstractmethod
    def alignment_loss(self, out: DomainOutputs, state: StepState) -> Tensor:
        """The discrepancy between source and target (unweighted); subclasses must define it."""

    def training_step(self, state: StepState) -> None:
        out = joint_forward(self, state)
        state.losses[self.loss_name] = self.hparams["trade_off"] * self.alignment_loss(out, state)
