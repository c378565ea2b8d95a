"""Deep visual prompts (prefix tuning on a timm ViT): exactly depth x tokens x width new parameters, only they
and the head train, the frozen weights are bitwise unchanged by a step, and the prompts really steer the output."""
import pytest
import torch
import torch.nn.functional as F

from baselines.prefix import PromptedBlock
from dacl.errors import ConfigError
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS


def _vit():
    torch.manual_seed(0)
    return build_classifier("vit", 3, 1, 28, bottleneck_dim=0, patch_size=7, depth=3, embed_dim=32, num_heads=2)


def test_prompts_add_exactly_the_configured_parameters_and_only_they_train():
    model = _vit()
    total_before = sum(p.numel() for p in model.parameters())
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head.")}
    method = METHODS.build("prefix", num_virtual_tokens=5)
    method.setup(model, 3)
    assert method.added_parameters == 3 * 5 * 32
    assert sum(p.numel() for p in model.parameters()) - total_before == 3 * 5 * 32
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.endswith(".prompt") or n.startswith("head.")}
    assert sum(n.endswith(".prompt") for n in trainable) == 3

    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 3, (8,))
    prompts = [m.prompt.detach().clone() for m in model.modules() if isinstance(m, PromptedBlock)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    method.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    after = {n.replace(".block.", "."): p for n, p in model.named_parameters() if not n.endswith(".prompt")}
    for name, before in frozen_before.items():
        assert torch.equal(after[name], before), f"frozen weight {name} changed"
    moved = [m.prompt for m in model.modules() if isinstance(m, PromptedBlock)]
    assert all(not torch.equal(a, b) for a, b in zip(moved, prompts)), "every block's prompt must get a gradient"


def test_prompts_change_the_features_and_leave_the_token_count():
    model = _vit()
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        plain = model.features(x)
    METHODS.build("prefix", num_virtual_tokens=4).setup(model, 3)
    with torch.no_grad():
        prompted = model.features(x)
        tokens = model.backbone.net.forward_features(x)
    assert tokens.shape[1] == 16, "prompt tokens are dropped after every block"
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)


def test_prefix_rejects_a_backbone_without_transformer_blocks():
    with pytest.raises(ConfigError, match="ViT blocks"):
        METHODS.build("prefix").setup(build_classifier("lenet", 10, 1, 28), 10)
