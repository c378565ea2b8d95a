"""Prefix tuning: learned tokens that every attention layer of a frozen encoder attends to; only they and the
head train.

- Hugging Face text encoders (``model=minilm``): peft's ``PrefixTuningConfig`` (Li & Liang 2021), learned
  key/value prefixes in every layer.
- timm ViTs (``model=vit_tiny``, ``vit_micro``, any ``timm_name`` ViT): **deep visual prompts** (VPT-deep, Jia
  et al. 2022). ``num_virtual_tokens`` learned tokens are prepended to the input of every block and dropped
  from its output, so they act only through the keys and values they produce: prefix tuning whose prefixes are
  parameterised through the block's own frozen LayerNorm and ``qkv`` projection. Adds exactly
  depth x tokens x width parameters.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from baselines.common import FineTuneMethod
from dacl.errors import ConfigError
from dacl.registry import METHODS


class PromptedBlock(nn.Module):
    """A frozen transformer block whose input is prefixed with this block's own learned prompt tokens."""

    def __init__(self, block: nn.Module, num_tokens: int, dim: int, patch_area: int) -> None:
        super().__init__()
        self.block = block
        self.prompt = nn.Parameter(torch.empty(1, num_tokens, dim))
        bound = math.sqrt(6.0 / (patch_area + dim))  # VPT's Xavier-uniform range over patch x embedding
        nn.init.uniform_(self.prompt, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        n = self.prompt.shape[1]
        return self.block(torch.cat([self.prompt.expand(len(x), -1, -1).to(x.dtype), x], dim=1))[:, n:]


def insert_deep_prompts(vit: nn.Module, num_tokens: int) -> int:
    """Wrap every block of a timm VisionTransformer; returns the number of prompt parameters added."""
    blocks = getattr(vit, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0 or not hasattr(vit, "embed_dim"):
        raise ConfigError("prefix: no timm ViT blocks found (supported: model=minilm, or a timm VisionTransformer)")
    patch = getattr(getattr(vit, "patch_embed", None), "patch_size", (1, 1))
    area = 3 * int(patch[0]) * int(patch[1])
    dim = int(vit.embed_dim)
    for i, block in enumerate(blocks):
        blocks[i] = PromptedBlock(block, num_tokens, dim, area)
    return len(blocks) * num_tokens * dim


@METHODS.register("prefix")
class PrefixTuning(FineTuneMethod):
    """Prefix tuning on a frozen text encoder (peft) or ViT (deep visual prompts) + a trainable head."""

    defaults = {"num_virtual_tokens": 20, "projection": False, "checkpoint": None}

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        hf_model = getattr(model.backbone, "model", None)
        if hf_model is not None and hasattr(hf_model, "config"):
            self._setup_text(model, hf_model)
        else:
            model.requires_grad_(False)
            if self.hparams["projection"]:
                raise ConfigError("prefix: projection=true is peft's text re-parameterisation; ViT prompts are direct")
            self.added_parameters = insert_deep_prompts(getattr(model.backbone, "net", model.backbone),
                                                        int(self.hparams["num_virtual_tokens"]))
        model.head.requires_grad_(True)
        model.bottleneck.requires_grad_(True)

    def _setup_text(self, model, hf_model) -> None:
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        model.requires_grad_(False)
        config = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                    num_virtual_tokens=int(self.hparams["num_virtual_tokens"]),
                                    prefix_projection=bool(self.hparams["projection"]))
        model.backbone.model = get_peft_model(hf_model, config)
        self.added_parameters = sum(p.numel() for n, p in model.backbone.named_parameters() if p.requires_grad)
