"""QLoRA (Dettmers et al. 2023): LoRA on a base model whose linear layers are 4-bit NF4 with double quantization.

The base is quantized when it is loaded (``model=minilm_nf4``: transformers ``BitsAndBytesConfig``), then peft's
``prepare_model_for_kbit_training`` readies it (frozen base, fp32 norms, input gradients) and LoRA goes on
top. The classification head is dacl's own Linear, so it is never quantized. bitsandbytes runs NF4 on CPU too.
"""
from __future__ import annotations

from baselines.lora import LoRA
from dacl.errors import ConfigError
from dacl.registry import METHODS


def count_4bit_layers(module) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in module.modules())


@METHODS.register("qlora")
class QLoRA(LoRA):
    """LoRA on an NF4-quantized backbone (baselines package, via entry point)."""

    def setup(self, model, num_classes: int) -> None:
        from peft import prepare_model_for_kbit_training

        hf_model = getattr(model.backbone, "model", None)
        if hf_model is None or count_4bit_layers(model.backbone) == 0:
            raise ConfigError("qlora needs a 4-bit base model: use model=minilm_nf4 (hf_text with quantization: nf4)")
        model.backbone.model = prepare_model_for_kbit_training(hf_model, use_gradient_checkpointing=False)
        super().setup(model, num_classes)
