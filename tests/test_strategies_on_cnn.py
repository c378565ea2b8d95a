"""Each fine-tuning strategy's trainable-parameter set on the ImageNet EfficientNet-Lite0 CNN: a strategy that trains
nothing, or everything when it should not, fails; one that does not apply to a CNN says why in one line."""
import pytest
import torch

from dacl.errors import ConfigError
from dacl.experiment import build_method


class _Data:
    num_classes, in_channels, image_size = 10, 3, 64


def _build(name, **hparams):
    return build_method({"method": {"name": name, **hparams},
                         "model": {"backbone": "timm", "name": "tf_efficientnet_lite0", "pretrained": True,
                                   "bottleneck_dim": 256}}, _Data)


def _trainable(method, prefix=""):
    return {n for n, p in method.model.named_parameters() if p.requires_grad and n.startswith(prefix)}


def test_linear_probe_trains_only_the_head_and_full_finetune_everything():
    probe = _build("linear_probe")
    assert _trainable(probe) == {"head.weight", "head.bias"}
    full = _build("full_finetune")
    assert _trainable(full) == {n for n, _ in full.model.named_parameters()}


def test_bitfit_trains_only_biases_and_norm_shifts_of_the_trunk():
    method = _build("bitfit")
    trunk = _trainable(method, "backbone.")
    assert trunk and all(n.endswith(".bias") for n in trunk), sorted(trunk)[:5]
    assert not any("conv" in n and n.endswith(".weight") for n in trunk)


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_low_rank_and_rescaling_adapters_reach_the_pointwise_convolutions(name):
    method = _build(name)
    trunk = _trainable(method, "backbone.")
    total = sum(p.numel() for n, p in method.model.named_parameters() if n.startswith("backbone."))
    count = sum(p.numel() for n, p in method.model.named_parameters() if n in trunk)
    assert trunk and 0 < count < 0.1 * total, (count, total)
    assert all(("lora_" in n) or ("ia3_" in n) for n in trunk), sorted(trunk)[:5]
    assert any("conv_pwl" in n for n in trunk), "the pointwise projections must be adapted"
    assert {"head.weight", "head.bias"} <= _trainable(method)
    assert method.model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name", ["prefix", "adapters"])
def test_transformer_only_strategies_refuse_a_cnn_with_one_line(name):
    with pytest.raises(ConfigError, match="ViT|transformer"):
        _build(name)
