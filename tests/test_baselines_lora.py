"""LoRA baseline (peft): exactly the claimed parameters train, frozen weights stay bitwise, merge is exact."""
import pytest
import torch
import torch.nn.functional as F

from dacl.methods.base import Batch, StepState
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS


def _vit_lora(rank=4):
    torch.manual_seed(0)
    model = build_classifier("vit", 10, 1, 28, bottleneck_dim=0, depth=2, embed_dim=32, num_heads=2)
    method = METHODS.build("lora", rank=rank, alpha=2 * rank)
    method.setup(model, 10)
    return method


def test_only_lora_factors_and_head_train_and_their_count_is_exact():
    method = _vit_lora(rank=4)
    trainable = {n: p.numel() for n, p in method.model.named_parameters() if p.requires_grad}
    assert method.target_modules == ["qkv"]
    assert all("lora_A" in n or "lora_B" in n or n.startswith("head.") for n in trainable), sorted(trainable)
    # per block: A (r x 32) + B (96 x r) on qkv = Linear(32, 96); head 32*10 + 10
    assert sum(trainable.values()) == 2 * 4 * (32 + 96) + 32 * 10 + 10


def test_a_training_step_leaves_frozen_weights_bitwise_unchanged():
    method = _vit_lora()
    before = {n: p.detach().clone() for n, p in method.model.named_parameters()}
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.train()
    for _ in range(2):  # B starts at zero, so A only moves from the second step on
        state = StepState(0, 1, Batch(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))))
        method.training_step(state)
        opt.zero_grad()
        state.total_loss().backward()
        opt.step()
    for n, p in method.model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{n}: trainable={p.requires_grad} but changed={changed}"


def test_merge_gives_the_same_outputs_as_the_unmerged_model():
    method = _vit_lora()
    with torch.no_grad():
        for n, p in method.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # a trained-looking update (B = 0 would make the test trivial)
    method.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        unmerged = method.model(x)
        method.merge()
        merged = method.model(x)
    assert not any("lora" in n for n, _ in method.model.named_parameters())
    assert torch.allclose(unmerged, merged, atol=1e-4), (unmerged - merged).abs().max()
    assert (unmerged - F.linear(method.model.features(x), method.model.head.weight, method.model.head.bias)).abs().max() < 1e-4


def test_auto_targets_every_linear_of_a_cnn_and_rejects_a_missing_checkpoint(tmp_path):
    from dacl.errors import DataError

    model = build_classifier("lenet", 10, 1, 28, bottleneck_dim=0)
    linears = [n for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.Linear)]
    method = METHODS.build("lora", rank=2)
    method.setup(model, 10)
    assert linears and method.target_modules == linears
    with pytest.raises(DataError, match="model.safetensors"):
        METHODS.build("lora", checkpoint=str(tmp_path / "missing.pt")).setup(build_classifier("lenet", 10, 1, 28), 10)


def test_a_cnn_bottleneck_gets_lora_not_full_training_and_merges_exactly():
    torch.manual_seed(0)
    model = build_classifier("lenet", 10, 1, 28, bottleneck_dim=16)
    method = METHODS.build("lora", rank=2)
    method.setup(model, 10)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("bottleneck.") for n in trainable)
    assert all("lora_" in n or n.startswith("head.") for n in trainable), sorted(trainable)
    x = torch.randn(4, 1, 28, 28)
    method.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # non-zero updates, so merging has something to fold in
        unmerged = model(x)
        method.merge()
        merged = method.model(x)
    assert not any("lora" in n for n, _ in method.model.named_parameters())
    assert torch.allclose(unmerged, merged, atol=1e-4), (unmerged - merged).abs().max()


@pytest.mark.parametrize("name", ["lora", "bitfit", "ia3"])
def test_peft_baselines_keep_the_pretrained_batchnorm_statistics(name):
    torch.manual_seed(0)
    model = build_classifier("lenet", 10, 1, 28, bottleneck_dim=16, batch_norm=True)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    assert stats, "the model under test must have BatchNorm layers"
    method = METHODS.build(name)
    method.setup(model, 10)
    method.train()
    model(torch.randn(8, 1, 28, 28) * 3 + 1)  # a shifted batch would move any running statistic left in train mode
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in model.state_dict().items()
             if "running_" in k}
    assert after.keys() == stats.keys() and all(torch.equal(after[k], v) for k, v in stats.items())
