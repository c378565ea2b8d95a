"""(IA)^3 (Liu et al. 2022) through peft: learned per-channel rescaling vectors, initialised to one, so the
network starts exactly as pre-trained; only the vectors and the head train.

``target_modules: auto``: a BERT uses peft's own mapping (keys, values, feed-forward output); a timm ViT rescales
its fused ``qkv`` output (queries too, since timm fuses them; the paper scales keys and values only) and the
input of ``mlp.fc2`` (the feed-forward activation, as in the paper); other backbones rescale every Linear's output,
including a Linear bottleneck before the head.
"""
from __future__ import annotations

from torch import nn

from baselines.common import FineTuneMethod, linear_names
from baselines.lora import auto_target_modules
from dacl.registry import METHODS


def ia3_targets(backbone: nn.Module) -> tuple[list[str] | None, list[str] | None]:
    """(target_modules, feedforward_modules) for peft's IA3Config; (None, None) lets peft choose for HF models."""
    if hasattr(backbone, "config"):
        return None, None
    names = [n for n, _ in backbone.named_modules()]
    if any(n.endswith(".qkv") for n in names) and any(n.endswith("mlp.fc2") for n in names):
        return ["qkv", "fc2"], ["fc2"]
    return auto_target_modules(backbone), []


@METHODS.register("ia3")
class IA3(FineTuneMethod):
    """peft (IA)^3 rescaling vectors on a frozen backbone + trainable head (baselines package, via entry point)."""

    defaults = {"checkpoint": None, "freeze_bn_stats": True}

    def setup(self, model, num_classes: int) -> None:
        from peft import IA3Config, get_peft_model

        super().setup(model, num_classes)
        model.requires_grad_(False)
        hf_model = getattr(model.backbone, "model", None)
        host = "model" if hf_model is not None and hasattr(hf_model, "config") else None
        target = hf_model if host else model.backbone
        modules, feedforward = ia3_targets(target)
        adapted = get_peft_model(target, IA3Config(target_modules=modules, feedforward_modules=feedforward))
        if host:
            model.backbone.model = adapted
        else:
            model.backbone = adapted
        bottleneck = linear_names(model.bottleneck)
        if bottleneck:
            model.bottleneck = get_peft_model(model.bottleneck, IA3Config(target_modules=bottleneck, feedforward_modules=[]))
        model.head.requires_grad_(True)
        self.target_modules = modules or "peft default"
