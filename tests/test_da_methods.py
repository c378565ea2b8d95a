"""DA methods: each loss against values known by hand, then each method must beat source-only on a shift."""
import itertools

import pytest
import torch
from omegaconf import OmegaConf

from dacl.data.augment import cutout, random_affine, strong, weak
from dacl.engine.trainer import Trainer, TrainerConfig, seed_everything
from dacl.experiment import build_benchmark, build_method
from dacl.methods.da.cdan import MultilinearMap, entropy_weights
from dacl.methods.da.coral import coral_loss
from dacl.methods.da.deepjdot import jdot_cost, label_cost, transport_plan
from dacl.methods.da.mmd import mk_mmd
from dacl.errors import ConfigError
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS

g = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=g)


@pytest.mark.parametrize("estimator", ["quadratic", "linear"])
def test_mmd_is_zero_for_identical_samples_and_grows_with_shift(estimator):
    x = randn(64, 8)
    assert abs(float(mk_mmd(x, x.clone(), estimator=estimator))) < 1e-6
    near, far = (float(mk_mmd(x, randn(64, 8) + s, estimator=estimator)) for s in (0.5, 3.0))
    assert far > near and far > 0.1


def test_coral_known_values():
    xs = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # covariance diag(2, 0)
    xt = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # covariance diag(0, 2)
    assert float(coral_loss(xs, xt)) == pytest.approx((4 + 4) / (4 * 2 * 2))
    x = randn(50, 6)
    assert float(coral_loss(x, x + 3.0)) == pytest.approx(0.0, abs=1e-6), "same covariance, other mean: 0"
    assert float(coral_loss(x, x + 3.0, match_mean=True)) == pytest.approx(9.0, rel=1e-4)


def test_emd_plan_matches_brute_force_on_four_points():
    fs, ft, logits_t = randn(4, 3), randn(4, 3), randn(4, 5)
    ys = torch.tensor([0, 3, 1, 3])
    cost = jdot_cost(fs, ys, ft, logits_t, alpha=1.0, lambda_t=0.5)
    assert float(cost[0, 1]) == pytest.approx(float((fs[0] - ft[1]).pow(2).sum() + 0.5 * -torch.log_softmax(logits_t, 1)[1, 0]), rel=1e-5)
    best = min(sum(float(cost[i, p[i]]) for i in range(4)) / 4 for p in itertools.permutations(range(4)))
    gamma = transport_plan(cost, "emd")
    assert float((gamma * cost).sum()) == pytest.approx(best, rel=1e-5)
    assert torch.allclose(gamma.sum(0), torch.full((4,), 0.25)) and torch.allclose(gamma.sum(1), torch.full((4,), 0.25))
    entropic = transport_plan(cost, "sinkhorn", reg=1e-2)
    assert float((entropic * cost).sum()) == pytest.approx(best, rel=1e-2)


def test_deepjdot_authors_plan_cost_and_warmup():
    """The authors' code plans on ||onehot(y_s) - p_t||^2 but minimises the CE cost under that plan; during
    ``warmup_steps`` the alignment term is exactly zero (source-only warm start). Hand-made case (equal features):
    the CE cost keeps each source on the target with two moderate errors (-2 log 0.2 = 3.22 < -log 0.79 - log 0.001
    = 7.14), the bounded squared cost prefers the swap (1.76 < 2.54), so the two plans differ."""
    from dacl.methods.base import Batch, StepState
    from dacl.methods.da.common import DomainOutputs

    ys = torch.tensor([0, 1])
    probs = torch.tensor([[0.2, 0.001, 0.799], [0.79, 0.2, 0.01]])
    logits_t = probs.log()
    direct = torch.stack([(torch.nn.functional.one_hot(y, 3) - probs).pow(2).sum(1) for y in ys])
    assert torch.allclose(label_cost(ys, logits_t, "sqeuclidean"), direct, atol=1e-6)
    feats = torch.zeros(2, 4)
    out = DomainOutputs(torch.zeros(2, 3), logits_t, feats, feats)
    batch = Batch(torch.zeros(2, 1), ys)
    ce_cost = jdot_cost(feats, ys, feats, logits_t, 0.5, 1.0)
    identity, swap = torch.eye(2) / 2, torch.eye(2).flip(0) / 2
    assert torch.allclose(transport_plan(ce_cost), identity)
    authors = METHODS.build("deepjdot", alpha=0.5, lambda_t=1.0, plan_label_cost="sqeuclidean", warmup_steps=10,
                            plan_forward="train")
    assert float(authors.alignment_loss(out, StepState(9, 100, batch))) == 0.0, "warm-up: source-only"
    assert float(authors.alignment_loss(out, StepState(10, 100, batch))) == pytest.approx(float((swap * ce_cost).sum()), rel=1e-5)
    plain = METHODS.build("deepjdot", alpha=0.5, lambda_t=1.0, plan_label_cost="ce", plan_forward="train")
    assert float(plain.alignment_loss(out, StepState(0, 100, batch))) == pytest.approx(float((identity * ce_cost).sum()), rel=1e-5)


def test_deepjdot_plans_on_an_inference_mode_forward():
    """The authors compute the plan with model.predict before each update: dropout off, and the network left in
    training mode for the update itself, whose loss still carries gradients."""
    from dacl.methods.base import Batch, StepState
    from dacl.methods.da.common import joint_forward

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.drop, self.head = torch.nn.Linear(3, 4), torch.nn.Dropout(0.9), torch.nn.Linear(4, 2)
            self.modes: list[bool] = []

        def forward_with_features(self, x):
            self.modes.append(self.training)
            f = self.drop(self.body(x))
            return self.head(f), f

    torch.manual_seed(0)
    net = Net()
    method = METHODS.build("deepjdot")
    method.setup(net, 2)
    batch = Batch(torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]), x_target=torch.randn(6, 3))
    state = StepState(0, 10, batch)
    net.train()
    loss = method.alignment_loss(joint_forward(method, state), state)
    assert net.modes == [True, False] and net.training  # training forward, then the plan's inference forward
    loss.backward()
    assert net.body.weight.grad is not None and float(net.body.weight.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="plan_forward"):
        METHODS.build("deepjdot", plan_forward="predict").setup(Net(), 2)


def test_cdan_multilinear_map_exact_and_randomized():
    f, p = randn(6, 4), torch.softmax(randn(6, 3), 1)
    exact = MultilinearMap(4, 3, None)(f, p)
    assert exact.shape == (6, 12) and torch.allclose(exact[2].view(3, 4), torch.outer(p[2], f[2]))
    rnd = MultilinearMap(4, 3, 50_000)  # preserves inner products in expectation: <T(a), T(b)> ~ <f_a,f_b><p_a,p_b>
    t = rnd(f, p)
    want = (f @ f.T) * (p @ p.T)
    assert torch.allclose(t @ t.T, want, atol=0.1 * float(want.abs().max()))


def test_cdan_entropy_weights_favour_confident_examples():
    probs = torch.tensor([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3]])
    w = entropy_weights(probs)
    assert float(w.mean()) == pytest.approx(1.0) and w[0] > w[1]


def test_sinkhorn_divergence_zero_for_identical_samples():
    method = METHODS.build("sinkhorn", normalize=False)
    method.setup(torch.nn.Identity(), 2)
    x = randn(40, 3)
    assert float(method.divergence(x, x.clone())) == pytest.approx(0.0, abs=1e-4)
    assert float(method.divergence(x, x + 2.0)) > 1.0


def test_augmentations_are_batched_label_preserving_distortions():
    x = randn(16, 1, 28, 28)
    assert torch.allclose(random_affine(x, translate=0.0), x, atol=1e-4), "the identity transform must be exact"
    for aug in (weak, strong, cutout):
        y = aug(x)
        assert y.shape == x.shape and not torch.allclose(y, x)


def test_class_balanced_thresholds_lower_the_bar_for_rare_classes():
    st = METHODS.build("self_training", class_balanced=True, threshold=0.95, min_threshold=0.8)
    st.setup(torch.nn.Linear(2, 3), 3)
    st.class_rate.copy_(torch.tensor([0.6, 0.3, 0.0]))
    tau = st.thresholds()
    assert tau[0] == pytest.approx(0.95) and 0.8 < tau[1] < 0.95 and tau[2] == pytest.approx(0.8)


# --- each method must beat source-only on the synthetic shift (a no-op method fails this) ----------------------
STEPS = {"self_training": 300, "adamatch": 300}


def _target_acc(method_name, tiny_config, tmp_path, steps):
    cfg = OmegaConf.to_container(tiny_config(f"method={method_name}", f"trainer.max_steps={steps}", "trainer.batch_size=64",
                                             f"trainer.eval_every={steps}", "trainer.save_model=false"), resolve=True)
    data = build_benchmark(cfg, torch.device("cpu"))
    seed_everything(0)
    method = build_method(cfg, data)
    fit = Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), tmp_path / method_name).fit()
    return fit.history[-1]["target_test_acc"]


_source_only: dict[int, float] = {}


@pytest.mark.parametrize("name", ["cdan", "cdan_e", "mmd", "coral", "deepjdot", "sinkhorn", "self_training", "adamatch"])
def test_method_beats_source_only_on_synthetic_shift(name, tiny_config, tmp_path):
    """Measured at 150 steps (300 for self-training and AdaMatch; 1 and 2 threads): source-only 0.81, the methods
    0.87-0.93."""
    steps = STEPS.get(name, 150)
    if steps not in _source_only:
        _source_only[steps] = _target_acc("source_only", tiny_config, tmp_path, steps)
    acc = _target_acc(name, tiny_config, tmp_path, steps)
    assert acc > _source_only[steps] + 0.03, f"{name}: target acc {acc:.3f} vs source-only {_source_only[steps]:.3f}"


def test_self_training_rounds_refresh_a_frozen_teacher_at_round_boundaries():
    from dacl.methods.base import Batch, StepState

    st = METHODS.build("self_training", rounds=2, ema_teacher=0.0)
    st.setup(torch.nn.Linear(4, 3), 3)
    batch = Batch(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))
    st._refresh_teacher(StepState(10, 90, batch))
    assert int(st.teacher_round) == 0, "first third: source-only warm-up, no teacher yet"
    st._refresh_teacher(StepState(30, 90, batch))
    assert int(st.teacher_round) == 1 and torch.equal(st.teacher.weight, st.model.weight)
    with torch.no_grad():
        st.model.weight.add_(1.0)
    st._refresh_teacher(StepState(45, 90, batch))
    assert not torch.equal(st.teacher.weight, st.model.weight), "the teacher stays frozen within a round"
    st._refresh_teacher(StepState(60, 90, batch))
    assert int(st.teacher_round) == 2 and torch.equal(st.teacher.weight, st.model.weight)
    assert not any(p.requires_grad for p in st.teacher.parameters())
    assert "teacher_round" in st.state_dict() and "teacher.weight" in st.state_dict(), "resume restores the teacher"


def test_cdan_switches_to_the_randomized_map_for_large_products():
    from dacl.models.classifier import build_classifier

    model = build_classifier("lenet", num_classes=10, in_channels=1, image_size=28, bottleneck_dim=256)
    exact = METHODS.build("cdan")
    exact.setup(model, 10)
    assert exact.map.out_features == 2560 and not exact.map.randomized
    rnd = METHODS.build("cdan_e", max_exact_dim=1000, randomized_dim=512)
    rnd.setup(model, 10)
    assert rnd.map.randomized and rnd.map.out_features == 512 and rnd.hparams["entropy"]


def test_dann_digits_trunk_matches_the_paper_shapes_and_its_layout_trick_changes_nothing():
    """Ganin et al.'s MNIST-M trunk: 32x32 -> 48x5x5 = 1,200 features. channels_last and pool-before-ReLU are
    speed tricks only: the same weights on a plain NCHW conv-ReLU-pool stack must give the same features."""
    torch.manual_seed(0)
    model = build_classifier("dann_digits", num_classes=10, in_channels=3, image_size=32, bottleneck_dim=100)
    trunk = model.backbone
    assert trunk.out_features == 1200 and model.feature_dim == 100
    x = torch.randn(8, 3, 32, 32)
    c1, c2 = trunk.conv[0], trunk.conv[3]
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(32, 48, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten())
    ref[0].load_state_dict(c1.state_dict())
    ref[3].load_state_dict(c2.state_dict())
    trunk.eval()
    torch.testing.assert_close(trunk(x), ref(x), rtol=1e-4, atol=1e-5)
    assert model(x).shape == (8, 10)
    with pytest.raises(ConfigError, match="at least 20x20"):
        build_classifier("dann_digits", num_classes=10, in_channels=3, image_size=16)


def test_cnn32_pool_before_relu_and_channels_last_match_the_plain_conv_bn_relu_pool_stack():
    import copy
    torch.manual_seed(0)
    trunk = build_classifier("cnn32", num_classes=10, in_channels=3, image_size=32).backbone.eval()
    layers = [copy.deepcopy(m).to(memory_format=torch.contiguous_format) for m in trunk.conv]
    for k in range(0, 12, 4):  # conv, bn, pool, relu -> conv, bn, relu, pool
        layers[k + 2], layers[k + 3] = layers[k + 3], layers[k + 2]
    x = torch.randn(4, 3, 32, 32)
    assert isinstance(layers[2], torch.nn.ReLU) and layers[0].weight.is_contiguous()
    torch.testing.assert_close(trunk.conv(x), torch.nn.Sequential(*layers)(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["coral", "mmd"])
def test_alignment_layer_chooses_features_logits_or_both(name):
    """Deep CORAL's released net aligns the class scores (fc8), DAN's fc7 and fc8: ``layer`` picks which
    activations the discrepancy compares, and 'both' is the sum of the two."""
    from dacl.methods.base import Batch, StepState
    from dacl.methods.da.common import DomainOutputs

    torch.manual_seed(0)
    feats_s, feats_t = torch.randn(16, 5), torch.randn(16, 5) * 3 + 1
    logits_s, logits_t = torch.randn(16, 3), torch.randn(16, 3)  # same distribution: small discrepancy
    out = DomainOutputs(logits_s, logits_t, feats_s, feats_t)
    state = StepState(0, 1, Batch(torch.zeros(16, 1), torch.zeros(16, dtype=torch.long)))
    loss = {layer: float(METHODS.build(name, layer=layer).alignment_loss(out, state))
            for layer in ("features", "logits", "both")}
    assert loss["features"] > loss["logits"] > 0
    assert loss["both"] == pytest.approx(loss["features"] + loss["logits"], rel=1e-5)
    with pytest.raises(ConfigError, match="layer must be one of"):
        METHODS.build(name, layer="fc7").alignment_loss(out, state)


def test_self_training_ema_teacher_labels_in_inference_mode_and_follows_the_student():
    """The guarded default: source-only for the warm-up share, then pseudo-labels from an EMA teacher that moves
    (1 - momentum) of the way to the student after each update; rounds and an EMA teacher cannot be combined."""
    from dacl.methods.base import Batch, StepState

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    method = METHODS.build("self_training")
    assert method.hparams["ema_teacher"] == 0.99 and method.hparams["warmup"] == 0.1
    method.setup(model, 3)
    batch = Batch(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,)), x_target=torch.randn(8, 1, 2, 2))
    warm = StepState(0, 100, batch)
    method.training_step(warm)
    assert set(warm.losses) == {"cls"}  # warm-up: no pseudo-label term
    state = StepState(50, 100, batch)
    method.training_step(state)
    assert "pseudo" in state.losses and not method.teacher.training
    before = method.teacher[1].weight.clone()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    method.after_update(state)
    assert torch.allclose(method.teacher[1].weight, before + 0.01 * (model[1].weight - before), atol=1e-6)
    with pytest.raises(ConfigError, match="rounds and ema_teacher"):
        METHODS.build("self_training", rounds=2).setup(model, 3)
    plain = METHODS.build("fixmatch")
    plain.setup(model, 3)
    assert not hasattr(plain, "teacher") and plain.hparams["warmup"] == 0.0


def test_dann_paper_network_reads_the_conv_features_with_one_hidden_layer():
    """The DANN paper's digits net: SAME convolutions (28 px -> 7x7x48), two 100-unit Linear-ReLU layers without
    BatchNorm before the head, and a 100-unit domain classifier on the flattened conv features."""
    from dacl.methods.base import Batch, StepState
    from dacl.models.classifier import build_classifier

    model = build_classifier("dann_digits", 10, 3, 28, bottleneck_dim=100, bottleneck_depth=2, bottleneck_norm=False,
                             padding=2, dropout=0.0)
    assert model.backbone.out_features == 7 * 7 * 48
    assert [type(m).__name__ for m in model.bottleneck] == ["Linear", "ReLU", "Linear", "ReLU"]
    method = METHODS.build("dann", disc_hidden=100, disc_layers=1, disc_batch_norm=False, disc_input="backbone")
    method.setup(model, 10)
    assert [type(m).__name__ for m in method.discriminator.net] == ["Linear", "Identity", "ReLU", "Linear"]
    assert method.discriminator.net[0].in_features == 7 * 7 * 48
    state = StepState(0, 10, Batch(torch.randn(4, 3, 28, 28), torch.randint(0, 10, (4,)), x_target=torch.randn(4, 3, 28, 28)))
    method.training_step(state)
    assert state.outputs["features"].shape == (8, 7 * 7 * 48) and state.losses["domain"] > 0
    state.total_loss().backward()
    assert model.backbone.conv[0].weight.grad is not None and method.discriminator.net[0].weight.grad is not None
    with pytest.raises(ConfigError, match="disc_input"):
        METHODS.build("dann", disc_input="head").setup(model, 10)


def test_cdan_authors_recipe_parts():
    """thuml/CDAN's digits recipe: entropy weights normalised within each domain, a source-only start during which the
    discriminator gets no loss, a discriminator with dropout whose lr the schedule leaves alone, and the lr halved at
    the start of every decay_epochs-th epoch."""
    from dacl.engine.optim import SCHEDULES
    from dacl.methods.base import Batch, StepState

    probs = torch.tensor([[0.98, 0.01, 0.01], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]])
    w = entropy_weights(probs, n_source=2)
    assert float(w[:2].sum()) == pytest.approx(float(w[2:].sum()))  # each domain carries half of the loss
    assert float(w.mean()) == pytest.approx(1.0) and w[0] > w[1] and w[3] > w[2]
    step = SCHEDULES.get("step")(max_steps=100, steps_per_epoch=10, decay_epochs=5, factor=0.5)
    assert [step(s) for s in (0, 39, 40, 89, 90)] == [1.0, 1.0, 0.5, 0.5, 0.25]  # epochs 1-4, 5-9, 10

    class Net(torch.nn.Module):
        feature_dim = 3

        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward_with_features(self, x):
            f = self.lin(x.flatten(1))
            return f, f

    method = METHODS.build("cdan_e", adapt_after=5, disc_dropout=0.5, disc_lr_schedule=False, entropy_norm="per_domain",
                           randomized=False, disc_hidden=8)
    method.setup(Net(), 3)
    assert any(isinstance(m, torch.nn.Dropout) for m in method.discriminator.net)
    assert [g.get("scheduled", True) for g in method.param_groups()] == [True, False]
    batch = Batch(torch.randn(4, 1, 2, 2), torch.randint(0, 3, (4,)), x_target=torch.randn(4, 1, 2, 2))
    early, late = StepState(4, 100, batch), StepState(5, 100, batch)
    method.training_step(early)
    method.training_step(late)
    assert "domain" not in early.losses and "domain" in late.losses
    assert method.grl_coeff(late) == pytest.approx(0.0)  # the warm start counts from adaptation's start
    with pytest.raises(ConfigError, match="entropy_norm"):
        METHODS.build("cdan_e", entropy_norm="global").setup(Net(), 3)


def test_tf_dann_initialisation_sets_every_layer():
    from dacl.models.classifier import build_classifier, init_weights

    model = build_classifier("dann_digits", 10, 3, 28, bottleneck_dim=100, bottleneck_depth=2, bottleneck_norm=False,
                             padding=2, weight_init="truncated_normal")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5 and all(torch.all(m.bias == 0.1) for m in layers)
    assert all(m.weight.abs().max().item() <= 0.2 and 0.07 < m.weight.std().item() < 0.1 for m in layers)
    default = build_classifier("dann_digits", 10, 3, 28, bottleneck_dim=100, padding=2)
    assert float(default.bottleneck[0].weight.std()) < 0.02  # PyTorch's default: ~8x smaller on the 2352-wide layer
    with pytest.raises(ConfigError, match="weight_init"):
        init_weights(model, "xavier")
