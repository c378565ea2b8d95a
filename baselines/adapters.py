"""Houlsby bottleneck adapters (Houlsby et al. 2019), once for both backbones: peft has no bottleneck adapter.

Each adapted sublayer output h becomes h + W_up(GELU(W_down h)), inside the residual branch, after the
attention output projection and after the feed-forward output of every transformer block (timm ViT:
``attn.proj`` and ``mlp.fc2``; BERT: ``attention.output.dense`` and ``output.dense``). W_up starts at zero,
so at step 0 the network computes exactly what the frozen backbone did. Adapters, layer norms (as in the
paper; ``train_norms``) and the head train; everything else is frozen.
"""
from __future__ import annotations

import re

import torch.nn.functional as F
from torch import Tensor, nn

from baselines.common import FineTuneMethod
from dacl.errors import ConfigError
from dacl.registry import METHODS

SITES = {  # which sublayer outputs get an adapter, per backbone family (module-name patterns)
    "vit": (r"blocks\.\d+\.attn\.proj$", r"blocks\.\d+\.mlp\.fc2$"),
    "bert": (r"layer\.\d+\.attention\.output\.dense$", r"layer\.\d+\.output\.dense$"),
}


class Adapter(nn.Module):
    """down-project -> GELU -> up-project (zero init) with a residual connection."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(F.gelu(self.down(h)))


class WithAdapter(nn.Module):
    """A sublayer's output projection followed by its adapter."""

    def __init__(self, layer: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.layer = layer
        self.adapter = Adapter(layer.out_features, bottleneck)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.layer(x))


def insert_adapters(backbone: nn.Module, bottleneck: int) -> list[str]:
    names = [n for n, _ in backbone.named_modules()]
    for family, patterns in SITES.items():
        sites = [n for n in names if any(re.search(p, n) for p in patterns)]
        if sites:
            break
    else:
        raise ConfigError("adapters: no transformer blocks found (supported: timm ViT, BERT-style encoders)")
    for name in sites:
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name)
        setattr(parent, child, WithAdapter(getattr(parent, child), bottleneck))
    return sites


@METHODS.register("adapters")
class Adapters(FineTuneMethod):
    """Houlsby adapters in every transformer block + trainable head (baselines package, via entry point)."""

    defaults = {"bottleneck": 64, "train_norms": True, "checkpoint": None}

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        model.requires_grad_(False)
        self.sites = insert_adapters(model.backbone, int(self.hparams["bottleneck"]))
        for m in model.backbone.modules():
            if isinstance(m, Adapter) or (self.hparams["train_norms"] and isinstance(m, nn.LayerNorm)):
                m.requires_grad_(True)
        model.bottleneck.requires_grad_(True)
        model.head.requires_grad_(True)
