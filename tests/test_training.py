import json

import pytest
import torch
from omegaconf import OmegaConf

from dacl.engine.trainer import Trainer, TrainerConfig, seed_everything
from dacl.engine.weights import load_weights
from dacl.errors import NonFiniteLossError
from dacl.experiment import build_benchmark, build_method, run_experiment
from dacl.methods.base import StepState
from dacl.registry import METHODS


def test_30_step_dann_run_writes_complete_results(tiny_config, tmp_path):
    res = run_experiment(tiny_config("method=dann"), tmp_path, command="dacl run method=dann")
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    for key in ("status", "benchmark", "task", "method", "seed", "variant", "command", "config", "commit", "dirty", "started_at", "hardware",
                "versions", "steps", "wall_seconds", "train_images_per_second", "params", "selection_protocols",
                "metrics", "selection", "history"):
        assert key in on_disk, key
    assert on_disk["steps"] == 30 and on_disk["method"] == "dann" and on_disk["config"]["seed"] == 0
    assert on_disk["versions"]["torch"] == torch.__version__ and on_disk["hardware"]["device"] == "cpu"
    m = on_disk["metrics"]
    assert set(m["target_test_acc"]) == {"last", "source_val", "oracle"} and 0 <= m["source_test_acc"] <= 1
    assert set(m["target_test_ece"]) == {"last", "source_val", "oracle"}
    assert on_disk["params"]["method_total"]["total"] > on_disk["params"]["model"]["total"], "discriminator counted"
    assert [h["step"] for h in on_disk["history"]] == [10, 20, 30]
    # the source_val pick is the best source-validation step, never chosen by target accuracy
    best = max(on_disk["history"], key=lambda h: h["source_val_acc"])
    assert on_disk["selection"]["source_val"]["step"] == best["step"]
    assert (tmp_path / "train_log.csv").read_text().count("\n") == 4 and (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "failed.json").exists()


def _train(cfg_overrides, tiny_config, run_dir, steps=150, zero_domain_loss=False):
    cfg = OmegaConf.to_container(tiny_config(*cfg_overrides, f"trainer.max_steps={steps}", "trainer.batch_size=64",
                                             f"trainer.eval_every={steps}", "trainer.save_model=false"), resolve=True)
    data = build_benchmark(cfg, torch.device("cpu"))
    seed_everything(0)
    method = build_method(cfg, data)
    if zero_domain_loss:  # a "DANN" that does nothing beyond source-only must fail the alignment test
        original = method.training_step

        def no_domain(state: StepState) -> None:
            original(state)
            state.losses["domain"] = state.losses["domain"] * 0.0

        method.training_step = no_domain
    fit = Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), run_dir).fit()
    return method, data, fit.history[-1]["target_test_acc"]


def _domain_gap(method, data) -> float:
    """Squared distance between source and target feature means, relative to the within-domain spread."""
    method.eval()
    with torch.no_grad():
        fs, ft = method.model.features(data.source_test[0]), method.model.features(data.target_test[0])
    return float((fs.mean(0) - ft.mean(0)).pow(2).sum() / (0.5 * (fs.var(0).sum() + ft.var(0).sum())))


def test_dann_aligns_domains_and_beats_a_zero_domain_loss_variant(tiny_config, tmp_path):
    """Against the same DANN with its domain loss zeroed (same BN mixing, same batches): measured here,
    gap 0.06 vs 0.61 and target accuracy 0.89 vs 0.68 after 150 steps."""
    dann, data, acc = _train(["method=dann"], tiny_config, tmp_path / "a")
    null, _, acc_null = _train(["method=dann"], tiny_config, tmp_path / "b", zero_domain_loss=True)
    gap, gap_null = _domain_gap(dann, data), _domain_gap(null, data)
    assert gap < 0.5 * gap_null, f"features not aligned: domain gap {gap:.3f} vs {gap_null:.3f} without the domain loss"
    assert acc > acc_null + 0.05, f"DANN target acc {acc:.3f} vs no-domain-loss {acc_null:.3f}"


def test_resume_gives_identical_final_metrics(tiny_config, tmp_path):
    full = run_experiment(tiny_config("method=dann", "trainer.eval_every=10"), tmp_path / "full")
    paused = run_experiment(tiny_config("method=dann", "trainer.eval_every=10"), tmp_path / "resumed", stop_at=17)
    assert paused["status"] == "paused" and (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = run_experiment(tiny_config("method=dann", "trainer.eval_every=10", "trainer.resume=true"), tmp_path / "resumed")
    assert resumed["history"] == full["history"]
    assert resumed["metrics"] == full["metrics"]
    w_full = load_weights(tmp_path / "full" / "model.safetensors")
    w_res = load_weights(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    rows = (tmp_path / "resumed" / "train_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["10", "17", "20", "30"], "log truncated/continued at the resume step"


def test_fresh_run_replaces_the_logs_of_a_killed_run_in_the_same_directory(tiny_config, tmp_path):
    """A run killed mid-way (no checkpoint) and started again without resume used to append its rows after the
    dead run's, so eval_log.csv held step 10 twice."""
    cfg = tiny_config("method=source_only", "trainer.eval_every=10")
    run_experiment(cfg, tmp_path, stop_at=17)
    (tmp_path / "checkpoint.pt").unlink()  # killed before it could checkpoint
    run_experiment(tiny_config("method=source_only", "trainer.eval_every=10", "trainer.validators=[source_val,entropy]"), tmp_path)
    assert "score/entropy" in (tmp_path / "eval_log.csv").read_text().splitlines()[0], "columns of the new run, not the dead one's"
    for name in ("train_log.csv", "eval_log.csv"):
        steps = [r.split(",")[0] for r in (tmp_path / name).read_text().strip().splitlines()[1:]]
        assert steps == sorted(set(steps), key=int), f"{name} has rows of two runs: {steps}"


def test_nan_loss_stops_with_clear_error_and_no_results(tiny_config, tmp_path):
    with pytest.raises(NonFiniteLossError, match="lower trainer.lr"):
        run_experiment(tiny_config("method=source_only", "trainer.lr=1e30", "trainer.log_every=1"), tmp_path)
    assert not (tmp_path / "results.json").exists()
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert failed["status"] == "failed" and "NonFiniteLossError" in failed["error"]


def test_plugins_stack_through_hooks(tiny_config, synthetic_pair, tmp_path):
    from dacl.methods.base import Batch, Plugin

    calls = []

    class Recorder(Plugin):
        def before_backward(self, state):
            calls.append(sorted(state.losses))
            state.losses["extra"] = state.losses["cls"] * 0 + 1.0

    cfg = OmegaConf.to_container(tiny_config("method=source_only", "plugins=[{name: target_entropy, weight: 0.5}]"), resolve=True)
    method = build_method(cfg, synthetic_pair)
    method.add_plugin(Recorder())
    d = synthetic_pair
    state = StepState(0, 10, Batch(d.source_train[0][:8], d.source_train[1][:8], d.target_train_x[:8]))
    method.training_step(state)
    for hook in method.hooks:
        hook.before_backward(state)
    assert calls == [["cls", "target_entropy"]], "plugins run in order, each seeing earlier terms"
    assert set(state.losses) == {"cls", "target_entropy", "extra"}
    assert state.total_loss().item() == pytest.approx(sum(v.item() for v in state.losses.values()), rel=1e-6)
    assert "plugins.0.hparams" not in method.state_dict() and len(method.plugins) == 2
    # the entropy plugin's target batch is drawn by the trainer even though source_only needs none
    res = run_experiment(tiny_config("method=source_only", "plugins=[{name: target_entropy, weight: 0.5}]"), tmp_path)
    assert res["status"] == "ok"
    assert "loss/target_entropy" in (tmp_path / "train_log.csv").read_text().splitlines()[0]


def test_linear_probe_trains_only_the_head(tiny_config, synthetic_pair, tmp_path):
    run_experiment(tiny_config("method=source_only"), tmp_path / "src")
    cfg = OmegaConf.to_container(tiny_config("method=linear_probe", f"method.checkpoint={tmp_path / 'src' / 'model.safetensors'}"), resolve=True)
    method = build_method(cfg, synthetic_pair)
    src = load_weights(tmp_path / "src" / "model.safetensors")
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    assert torch.equal(before["backbone.fc.0.weight"], src["backbone.fc.0.weight"]), "features loaded from checkpoint"
    Trainer(method, synthetic_pair, TrainerConfig.from_dict({**cfg["trainer"], "max_steps": 5, "save_model": False}),
            tmp_path / "probe").fit()
    after = method.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}, changed
    assert METHODS.get("linear_probe").__module__ == "baselines.linear_probe"


def test_linear_probe_feature_cache_trains_the_same_head_without_forward_passes(tiny_config, synthetic_pair, tmp_path):
    run_experiment(tiny_config("method=source_only"), tmp_path / "src")
    heads, forwards, initial = {}, {}, {}
    for cache in (True, False):
        cfg = OmegaConf.to_container(tiny_config("method=linear_probe", f"method.checkpoint={tmp_path / 'src' / 'model.safetensors'}",
                                                 f"method.cache_features={cache}"), resolve=True)
        seed_everything(0)
        method = build_method(cfg, synthetic_pair)
        initial[cache] = method.model.head.weight.detach().clone()
        calls = []
        method.model.backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
        Trainer(method, synthetic_pair, TrainerConfig.from_dict({**cfg["trainer"], "max_steps": 6, "save_model": False,
                                                                 "eval_every": 100}), tmp_path / f"probe{cache}").fit()
        heads[cache] = method.model.head.weight.detach().clone()
        forwards[cache] = sum(calls)
    assert torch.allclose(heads[True], heads[False], atol=1e-5), (heads[True] - heads[False]).abs().max()
    assert torch.equal(initial[True], initial[False])
    assert not torch.allclose(heads[True], initial[True]), "the cached probe must actually train its head"
    n = len(synthetic_pair.source_train[1])
    batch = tiny_config()["trainer"]["batch_size"]
    # cached: one pass over the training set (+ evaluation); uncached: 6 more training batches through the backbone
    assert forwards[False] - forwards[True] == 6 * batch - n


def _target_entropy_after(tiny_config, run_dir, *overrides):
    from dacl.methods.plugins import entropy

    cfg = OmegaConf.to_container(tiny_config("method=source_only", "trainer.max_steps=60", "trainer.eval_every=60",
                                             "trainer.save_model=false", *overrides), resolve=True)
    data = build_benchmark(cfg, torch.device("cpu"))
    seed_everything(0)
    method = build_method(cfg, data)
    fit = Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), run_dir).fit()
    method.eval()
    with torch.no_grad():
        return entropy(method.model(data.target_test[0])).item(), fit.history[-1]["source_val_acc"]


def test_target_entropy_plugin_lowers_target_entropy(tiny_config, tmp_path):
    """Known value (uniform logits -> log C), then behaviour: same seed and batches, only the plugin differs."""
    import math

    from dacl.methods.plugins import entropy

    assert entropy(torch.zeros(4, 10)).item() == pytest.approx(math.log(10))
    assert entropy(torch.tensor([[50.0, 0, 0]])).item() == pytest.approx(0.0, abs=1e-6)
    plain, _ = _target_entropy_after(tiny_config, tmp_path / "a")
    with_plugin, _ = _target_entropy_after(tiny_config, tmp_path / "b", "plugins=[{name: target_entropy, weight: 1.0}]")
    assert with_plugin < 0.7 * plain, f"target entropy {with_plugin:.3f} with the plugin vs {plain:.3f} without"


def test_source_only_learns_the_source_task(tiny_config, tmp_path):
    _, source_val_acc = _target_entropy_after(tiny_config, tmp_path)
    assert source_val_acc > 0.6, f"source validation accuracy {source_val_acc:.3f} after 60 steps (chance 0.1)"


def test_a_param_group_can_keep_its_lr_while_the_schedule_decays_the_rest(tiny_config, synthetic_pair, tmp_path):
    """thuml/CDAN halves the network's lr and leaves the discriminator's: disc_lr_schedule=false."""
    cfg = OmegaConf.to_container(tiny_config("method=cdan_e", "method.disc_lr_schedule=false", "trainer.schedule=step",
                                             "+trainer.schedule_kwargs={steps_per_epoch: 5, decay_epochs: 2}"),
                                 resolve=True)
    method = build_method(cfg, synthetic_pair)
    trainer = Trainer(method, synthetic_pair, TrainerConfig.from_dict({**cfg["trainer"], "save_model": False}), tmp_path)
    trainer.fit()
    network, discriminator = (g["lr"] for g in trainer.optimizer.param_groups)
    base = cfg["trainer"]["lr"]
    assert network == pytest.approx(base * 0.5 ** 3) and discriminator == pytest.approx(base)  # epochs 2, 4, 6 of 30 steps
