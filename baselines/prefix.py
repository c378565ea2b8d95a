"""Prefix tuning (Li & Liang 2021) through peft's ``PrefixTuningConfig``: learned key/value prefixes in every
attention layer of a frozen Hugging Face encoder; only the prefixes and the head train.

Supported for ``hf_text`` backbones (peft needs a transformers model). Known limit: the timm ViT variant
(learnable per-block key/value prefixes or deep visual prompts) is not built yet.
"""
from __future__ import annotations


from baselines.common import FineTuneMethod
from dacl.errors import ConfigError
from dacl.registry import METHODS


@METHODS.register("prefix")
class PrefixTuning(FineTuneMethod):
    """peft prefix tuning on a text encoder + a trainable head (baselines package, via entry point)."""

    defaults = {"num_virtual_tokens": 20, "projection": False}

    def setup(self, model, num_classes: int) -> None:
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        super().setup(model, num_classes)
        hf_model = getattr(model.backbone, "model", None)
        if hf_model is None or not hasattr(hf_model, "config"):
            raise ConfigError("prefix tuning needs a Hugging Face text backbone (model=minilm); the ViT variant is not built yet")
        model.requires_grad_(False)
        config = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                    num_virtual_tokens=int(self.hparams["num_virtual_tokens"]),
                                    prefix_projection=bool(self.hparams["projection"]))
        model.backbone.model = get_peft_model(hf_model, config)
        model.head.requires_grad_(True)
        model.bottleneck.requires_grad_(True)
