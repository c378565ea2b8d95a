"""Full fine-tuning baseline: layer-wise LR decay, gradual unfreezing from the top, BatchNorm modes."""
import pytest
import torch

from baselines.full_finetune import layer_groups
from dacl.methods.base import Batch, StepState
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS, OPTIMIZERS


def _vit():
    torch.manual_seed(0)
    return build_classifier("vit", 10, 1, 28, bottleneck_dim=0, depth=3, embed_dim=32, num_heads=2)


def _step(method, opt, step):
    state = StepState(step, 100, Batch(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))))
    method.training_step(state)
    opt.zero_grad()
    state.total_loss().backward()
    opt.step()


def test_layer_groups_cover_every_parameter_once_bottom_to_top():
    model = _vit()
    groups = layer_groups(model)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert groups[-1] == list(model.head.parameters()) and len(groups) == 1 + 3 + 1 + 1  # embed, 3 blocks, norm, head


def test_layer_decay_gives_geometric_learning_rates_ending_at_the_head():
    method = METHODS.build("full_finetune", layer_decay=0.5)
    method.setup(_vit(), 10)
    opt = OPTIMIZERS.get("adamw")(method.param_groups(), lr=1e-3)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[-1] == pytest.approx(1e-3) and all(a == pytest.approx(b * 0.5) for a, b in zip(lrs, lrs[1:]))


def test_gradual_unfreezing_trains_the_top_first_and_adds_one_group_per_stage():
    method = METHODS.build("full_finetune", unfreeze_every=2)
    method.setup(_vit(), 10)
    opt = OPTIMIZERS.get("adamw")(method.param_groups(), lr=1e-2, weight_decay=0.1)
    groups = method.groups
    snapshot = lambda: [[p.detach().clone() for p in g] for g in groups]  # noqa: E731
    moved = lambda a, b: [any(not torch.equal(x, y) for x, y in zip(ga, gb)) for ga, gb in zip(a, b)]  # noqa: E731
    start = snapshot()
    for step in range(2):
        _step(method, opt, step)
    assert moved(start, snapshot()) == [False] * (len(groups) - 1) + [True], "stage 1: only the head moves"
    mid = snapshot()
    for step in range(2, 4):
        _step(method, opt, step)
    assert moved(mid, snapshot()) == [False] * (len(groups) - 2) + [True, True], "stage 2: the next group joins"


@pytest.mark.parametrize("mode", ["freeze_stats", "freeze"])
def test_bn_modes_keep_running_statistics(mode):
    method = METHODS.build("full_finetune", bn=mode)
    method.setup(build_classifier("lenet", 10, 1, 28, batch_norm=True, bottleneck_dim=0), 10)
    bns = method._batch_norms()
    assert bns
    before = [b.running_mean.clone() for b in bns]
    affine = [b.weight.detach().clone() for b in bns]
    opt = OPTIMIZERS.get("sgd")(method.param_groups(), lr=0.1)
    method.train()
    _step(method, opt, 0)
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bns))
    assert all(torch.equal(a, b.weight) for a, b in zip(affine, bns)) == (mode == "freeze")


@pytest.mark.slow
def test_fine_tuning_starts_from_one_shared_pretraining_run(tmp_path):
    """pretrain.overrides names the pre-training run: it is trained once into pretrain.runs, every baseline of that
    configuration starts from its weights (a linear probe keeps them), and a method without a checkpoint is refused."""
    from omegaconf import OmegaConf

    from conftest import compose_config
    from dacl.engine.weights import WEIGHTS_FILE, load_weights
    from dacl.errors import ConfigError
    from dacl.experiment import run_experiment

    words = ["benchmark=digits_offline", "model=lenet", "method=source_only", "trainer.max_steps=30",
             "trainer.eval_every=30", "trainer.batch_size=32", "trainer.progress=false"]
    pretrain = "pretrain.overrides=[" + ",".join(f"'{w}'" for w in words) + "]"  # quoted: '=' inside a list value

    def run(method: str, folder: str) -> dict:
        cfg = compose_config("benchmark=synthetic_shift", "model=lenet", f"method={method}", "trainer.max_steps=10",
                             "trainer.eval_every=10", "trainer.batch_size=32", "trainer.progress=false", pretrain,
                             f"pretrain.runs={tmp_path / 'pretrain'}")
        return run_experiment(OmegaConf.to_container(cfg, resolve=True), tmp_path / folder)

    probe = run("linear_probe", "probe")
    (pretrained,) = list((tmp_path / "pretrain").rglob("results.json"))
    assert probe["pretrained_from"] == str(pretrained.parent)
    stamp = pretrained.stat().st_mtime_ns
    full = run("full_finetune", "full")
    assert full["pretrained_from"] == probe["pretrained_from"] and pretrained.stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "pretrain").rglob("results.json"))) == 1, "trained once for both baselines"
    start, probed = load_weights(pretrained.parent / WEIGHTS_FILE), load_weights(tmp_path / "probe" / WEIGHTS_FILE)
    backbone = [k for k in start if not k.startswith("head")]
    assert backbone and all(torch.equal(start[k], probed[k]) for k in backbone), "the probe keeps the pre-trained features"
    assert not all(torch.equal(start[k], v) for k, v in load_weights(tmp_path / "full" / WEIGHTS_FILE).items()
                   if k in backbone), "full fine-tuning moves them"
    again = run("linear_probe", "probe_again")  # the pre-training run exists now: the same result, bit for bit
    assert again["metrics"] == probe["metrics"]
    with pytest.raises(ConfigError, match="does not start from pre-trained weights"):
        run("dann", "dann")
