"""Test-time adaptation: what each method may touch, exact resets, and that adaptation helps on a shift."""
import copy

import pytest
import torch
from omegaconf import OmegaConf

from dacl.engine.trainer import Trainer, TrainerConfig, seed_everything
from dacl.engine.tta import build_tta, load_source_model, run_tta
from dacl.errors import ConfigError, DataError
from dacl.experiment import build_benchmark, build_method
from dacl.methods.tta.base import batch_norms
from dacl.metrics import entropy_from_logits


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A LeNet-BN trained on clean UCI digits (the synthetic_shift source) and the shifted target test set."""
    from conftest import TINY, compose_config

    cfg = OmegaConf.to_container(compose_config(*TINY, "method=source_only", "model=lenet_bn", "trainer.max_steps=200",
                                                "trainer.batch_size=64", "trainer.eval_every=200"), resolve=True)
    data = build_benchmark(cfg, torch.device("cpu"))
    seed_everything(0)
    method = build_method(cfg, data)
    run_dir = tmp_path_factory.mktemp("source")
    Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), run_dir).fit()
    return cfg, data, run_dir / "model.safetensors"


def _fresh_model(source):
    from dacl.models.classifier import build_classifier

    cfg, data, path = source
    model = build_classifier(num_classes=10, in_channels=1, image_size=28, **cfg["model"])
    return load_source_model(model, path).to(memory_format=torch.channels_last), data


def _states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_tent_updates_only_bn_affine_parameters(source):
    model, data = _fresh_model(source)
    before = copy.deepcopy(model.state_dict())
    tent = build_tta("tent", model, 10, lr=1e-2)
    tent.adapt(data.target_test[0][:64])
    tent.adapt(data.target_test[0][64:128])
    affine = {f"{n}.{p}" for n, m in model.named_modules() if m in batch_norms(model) for p in ("weight", "bias")}
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= affine, f"Tent changed non-affine tensors: {sorted(changed - affine)}"


@pytest.mark.parametrize("name", ["tent", "shot_im", "bn_adapt"])
def test_episodic_reset_restores_the_exact_source_state(name, source):
    model, data = _fresh_model(source)
    before = copy.deepcopy(model.state_dict())
    method = build_tta(name, model, 10)
    for i in range(3):
        method.adapt(data.target_test[0][i * 64:(i + 1) * 64])
    assert not _states_equal(before, model.state_dict()), f"{name} adapted nothing"
    method.reset()
    assert _states_equal(before, model.state_dict())
    first = method.adapt(data.target_test[0][:64])
    method.reset()
    assert torch.equal(first, method.adapt(data.target_test[0][:64])), "after reset, adaptation replays identically"


def test_bn_adapt_moves_statistics_to_the_target_batch(source):
    model, data = _fresh_model(source)
    bn = batch_norms(model)[0]
    x = data.target_test[0][:256]
    with torch.no_grad():
        target_mean = model.backbone.conv[0](x).mean(dim=(0, 2, 3))
    src_gap = (bn.running_mean - target_mean).abs().mean()
    build_tta("bn_adapt", model, 10).adapt(x)
    assert (bn.running_mean - target_mean).abs().mean() < 0.05 * src_gap


def test_shot_im_freezes_the_head_and_trains_the_features(source):
    model, data = _fresh_model(source)
    head, feat = model.head.weight.clone(), model.bottleneck[0].weight.clone()
    build_tta("shot_im", model, 10, lr=1e-2).adapt(data.target_test[0][:128])
    assert torch.equal(model.head.weight, head) and not torch.equal(model.bottleneck[0].weight, feat)


def test_tta_lowers_entropy_and_raises_accuracy_on_a_contrast_shift(source):
    """Measured: source 0.57; BN-adapt, Tent (and SHOT-IM) 0.97 on the low-contrast, bright, noisy target."""
    model, data = _fresh_model(source)
    x, y = data.target_test
    model.eval()
    with torch.no_grad():
        src_logits = model(x)
    src_acc, src_ent = float((src_logits.argmax(1) == y).float().mean()), float(entropy_from_logits(src_logits).mean())
    results = {}
    for name in ("bn_adapt", "tent"):
        m, _ = _fresh_model(source)
        method = build_tta(name, m, 10)
        results[name] = run_tta(method, [("shifted", x, y)], protocol="continual", batch_size=100)["shifted"]
    assert results["bn_adapt"] > src_acc + 0.03 and results["tent"] > src_acc + 0.03, (src_acc, results)

    def entropy_after_tent(lr):  # lr=0: Tent's test-batch normalisation alone, no entropy minimisation
        m, _ = _fresh_model(source)
        tent = build_tta("tent", m, 10, lr=lr)
        run_tta(tent, [("shifted", x, y)], protocol="continual", batch_size=100)
        with torch.no_grad():
            return float(entropy_from_logits(tent.model(x)).mean())

    adapted, frozen = entropy_after_tent(1e-3), entropy_after_tent(0.0)
    assert adapted < src_ent, (adapted, src_ent)
    assert adapted < frozen, "Tent's updates must lower entropy beyond what batch statistics alone do"


def test_protocol_and_checkpoint_errors_are_clear(source, tmp_path):
    model, data = _fresh_model(source)
    method = build_tta("bn_adapt", model, 10)
    with pytest.raises(ConfigError, match="episodic_batch"):
        run_tta(method, [("d", *data.target_test)], protocol="sometimes")
    with pytest.raises(DataError, match="model.safetensors"):
        load_source_model(model, tmp_path / "missing.pt")
    from dacl.models.classifier import build_classifier

    with pytest.raises(ConfigError, match="lenet_bn"):
        build_tta("tent", build_classifier("lenet", 10, 1, 28, bottleneck_dim=0), 10)  # no BN anywhere


def test_offline_shot_im_improves_over_the_source_model(source):
    from dacl.engine.tta import evaluate_adapted, fit_tta

    model, data = _fresh_model(source)
    method = build_tta("shot_im", model, 10, lr=1e-2)
    before = evaluate_adapted(method, *data.target_test)
    fit_tta(method, data.target_train_x, epochs=2)
    after = evaluate_adapted(method, *data.target_test)
    assert after > before + 0.05, (before, after)


def test_fit_tta_lr_decay_follows_shots_schedule(source):
    from dacl.engine.tta import fit_tta

    model, data = _fresh_model(source)
    method = build_tta("shot_im", model, 10, lr=1e-2)
    seen = []
    adapt = method.adapt
    method.adapt = lambda x: (seen.append(method.optimizer.param_groups[0]["lr"]), adapt(x))[1]
    fit_tta(method, data.target_train_x[:256], epochs=2, batch_size=64, lr_decay=True)
    total = 2 * (256 // 64)
    assert seen[0] == pytest.approx(1e-2)
    assert seen[-1] == pytest.approx(1e-2 * (1 + 10 * (total - 1) / total) ** -0.75)
    assert all(a > b for a, b in zip(seen, seen[1:]))


def test_shot_source_architecture():
    from dacl.models.classifier import build_classifier

    model = build_classifier("lenet", 10, 1, 28, batch_norm=True, bottleneck_relu=False, head_weight_norm=True)
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.bottleneck)
    assert hasattr(model.head, "parametrizations")  # weight norm: direction and magnitude are separate parameters


def test_a_shared_source_run_is_one_per_source_configuration(tmp_path):
    """Every test-time method, protocol and variant of a configuration adapts the same source run; anything that
    changes how the source model is trained (its method's hyper-parameters, the trainer, the seed) is another run."""
    from conftest import TINY, compose_config

    from dacl.engine.tta import shared_source_dir

    def folder(*overrides: str):
        cfg = OmegaConf.to_container(compose_config(*TINY, "model=lenet_bn", f"tta.source_runs={tmp_path}", *overrides),
                                     resolve=True)
        return shared_source_dir(cfg, "source_only")

    tent = folder("method=tent")
    assert tent.parent.parent.parent == tmp_path / "synthetic_shift" and tent.name == "seed0"
    assert folder("method=shot_im", "tta.protocol=offline", "variant=x", "method.lr=0.5", "trainer.threads=2") == tent
    for change in ("trainer.lr=0.5", "+tta.source.label_smoothing=0.1", "seed=1", "model.bottleneck_dim=32"):
        assert folder("method=tent", change) != tent, change
    assert folder("method=tent", "tta.source_runs=null") is None


def test_a_suite_of_target_domains_is_adapted_group_by_group(source):
    """tta.domain_group picks the domains a run meets in turn; each domain is scored on its own, and the protocol
    decides whether adaptation carries over from one to the next."""
    import dataclasses

    from dacl.benchmarks.domain_pair import TargetDomain
    from dacl.engine.tta import adapt_on_target_test

    cfg, data, _ = source
    model, _ = _fresh_model(source)
    n = len(data.target_test[1]) // 4
    suite = dataclasses.replace(data, target_domains=tuple(
        TargetDomain(f"d{k}", 1 + k // 2, k * n, (k + 1) * n) for k in range(4)))
    plain = {**cfg, "method": {"name": "tent", "lr": 0.02}}  # a large step, so carrying over shows
    out = {p: adapt_on_target_test({**plain, "tta": {"protocol": p, "domain_group": 2, "batch_size": 16}}, model, suite, 0)
           for p in ("episodic_domain", "continual")}
    assert out["continual"]["domain_order"] == ["d2", "d3"] and set(out["continual"]["per_domain"]) == {"d2", "d3"}
    first = out["continual"]["per_domain"]["d2"]
    assert out["episodic_domain"]["per_domain"]["d2"] == first, "the first domain starts from the source either way"
    assert out["episodic_domain"]["per_domain"]["d3"] != out["continual"]["per_domain"]["d3"]
    x, y = suite.target_test
    from dacl.metrics import accuracy, predict_in_batches

    assert out["continual"]["source_per_domain"]["d3"] == accuracy(predict_in_batches(model.eval(), x[3 * n:4 * n]), y[3 * n:4 * n])
    assert out["continual"]["target_test_acc"] == pytest.approx(sum(out["continual"]["per_domain"].values()) / 2)
    with pytest.raises(ConfigError, match="one of 1, 2"):
        adapt_on_target_test({**plain, "tta": {"domain_group": 7}}, model, suite, 0)
    with pytest.raises(ConfigError, match="several target domains"):
        adapt_on_target_test({**plain, "tta": {"domain_group": 1}}, model, data, 0)
