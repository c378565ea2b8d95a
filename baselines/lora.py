"""LoRA (Hu et al. 2022) through peft: frozen backbone, low-rank updates on chosen linear layers, trainable head.

``target_modules: auto`` picks per backbone what the LoRA paper and peft use: a timm ViT's fused ``qkv``
projection, a BERT's ``query``/``value``, otherwise every Linear of the backbone (the digits CNNs' and MLPs'
fully connected layers), and for a convolutional trunk with no Linear (EfficientNet) its pointwise 1x1 convolutions,
which hold most of its weights (peft's LoRA for Conv2d). A Linear bottleneck between backbone and head (the digits CNNs' 256-d one) is part
of the pre-trained features: it gets LoRA on its Linear too instead of training in full. ``merge()`` folds B A
into the base weights for inference (peft ``merge_and_unload``): same outputs, no extra latency.
"""
from __future__ import annotations

from torch import nn

from baselines.common import FineTuneMethod, linear_names
from dacl.errors import ConfigError
from dacl.registry import METHODS


def auto_target_modules(backbone: nn.Module) -> list[str]:
    names = [n for n, _ in backbone.named_modules()]
    if any(n.endswith(".qkv") for n in names):
        return ["qkv"]
    if any(n.endswith(".query") for n in names) and any(n.endswith(".value") for n in names):
        return ["query", "value"]
    linears = linear_names(backbone)
    if linears:
        return linears
    pointwise = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.groups == 1]
    if not pointwise:
        raise ConfigError("lora: the backbone has no Linear or pointwise convolution to adapt; set "
                          "method.target_modules explicitly")
    return pointwise


@METHODS.register("lora")
class LoRA(FineTuneMethod):
    """peft LoRA on the backbone + a trainable head (baselines package, via entry point)."""

    defaults = {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": "auto", "checkpoint": None,
                "freeze_bn_stats": True}

    def setup(self, model, num_classes: int) -> None:
        from peft import LoraConfig, get_peft_model

        super().setup(model, num_classes)
        targets = self.hparams["target_modules"]
        targets = auto_target_modules(model.backbone) if targets == "auto" else list(targets)
        model.requires_grad_(False)
        config = LoraConfig(r=int(self.hparams["rank"]), lora_alpha=float(self.hparams["alpha"]),
                            lora_dropout=float(self.hparams["dropout"]), target_modules=targets)
        model.backbone = get_peft_model(model.backbone, config)  # marks only the LoRA factors trainable
        bottleneck = linear_names(model.bottleneck)
        if bottleneck:
            model.bottleneck = get_peft_model(model.bottleneck, LoraConfig(
                r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=bottleneck))
        model.head.requires_grad_(True)
        self.target_modules = targets
        self.bottleneck_targets = bottleneck

    def merge(self) -> None:
        """Fold the low-rank updates into the frozen weights (inference: identical outputs, plain layers)."""
        for part in ("backbone", "bottleneck"):
            module = getattr(self.model, part)
            if hasattr(module, "merge_and_unload"):
                setattr(self.model, part, module.merge_and_unload())
