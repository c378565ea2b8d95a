"""No label-free selection protocol may read target labels, for any curriculum kind.

Two runs with identical training and permuted target test labels: the permutation changes every target accuracy
(so the oracle's pick), and must change no label-free protocol's pick. A selection that peeks at target labels
(``source_val`` choosing the best target accuracy, say) fails here."""
from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from dacl.engine.curriculum import DomainAdaptation
from dacl.engine.trainer import Trainer, TrainerConfig, seed_everything
from dacl.experiment import build_benchmark, build_method

LABEL_FREE = ["source_val", "entropy", "im", "bnm", "snd", "dev"]


def _history_with(target_acc, scores):
    return [{"step": i, "target_test_acc": t, **{f"score/{n}": s[i] for n, s in scores.items()}}
            for i, t in enumerate(target_acc)]


def test_each_protocol_picks_its_own_argmax_never_the_target_accuracy():
    """A hand-made history where target accuracy and every score disagree on the best step."""
    cur = DomainAdaptation.__new__(DomainAdaptation)
    cur.validators = {name: None for name in LABEL_FREE}
    target = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    scores = {name: [0.0] * 7 for name in LABEL_FREE}
    for k, name in enumerate(LABEL_FREE):
        scores[name][k + 1] = 1.0  # validator k prefers step k+1; the target prefers step 0
    picks = cur.select(_history_with(target, scores))
    assert picks["oracle"]["step"] == 0
    for k, name in enumerate(LABEL_FREE):
        assert picks[name]["step"] == k + 1, f"{name} picked step {picks[name]['step']}, not its own best"


def _permuted_labels(pair, generator_seed: int):
    x, y = pair.target_test
    g = torch.Generator().manual_seed(generator_seed)
    return replace(pair, target_test=(x, (y + torch.randint(1, pair.num_classes, y.shape, generator=g)) % pair.num_classes))


def _fit(cfg, data, folder):
    seed_everything(0)
    method = build_method(cfg, data)
    return Trainer(method, data, TrainerConfig.from_dict(cfg["trainer"]), folder).fit()


@pytest.mark.parametrize("method", ["source_only", "dann"])
def test_da_selection_ignores_target_labels(tiny_config, tmp_path, method):
    cfg = OmegaConf.to_container(tiny_config(f"method={method}", "trainer.max_steps=40", "trainer.eval_every=5",
                                             "trainer.save_model=false", f"trainer.validators=[{','.join(LABEL_FREE)}]"),
                                 resolve=True)
    data = build_benchmark(cfg, torch.device("cpu"))
    true_fit = _fit(cfg, data, tmp_path / "true")
    wrong_fit = _fit(cfg, _permuted_labels(data, 1), tmp_path / "wrong")
    true_acc = [r["target_test_acc"] for r in true_fit.history]
    wrong_acc = [r["target_test_acc"] for r in wrong_fit.history]
    assert true_acc != wrong_acc, "the permutation must change target accuracy, or the test proves nothing"
    for name in LABEL_FREE:
        assert true_fit.selected[name]["step"] == wrong_fit.selected[name]["step"], (
            f"protocol '{name}' changed its pick when only target test labels changed: it reads them")


def test_test_time_source_selection_follows_each_validators_own_score(tiny_config, tmp_path):
    """A test-time run selects its source model through the DA curriculum: each protocol picks its own score's best
    step. (Continual streams report the last evaluation only; there is no selection to leak.)"""
    from dacl.experiment import run_experiment

    common = ("method=bn_adapt", "trainer.max_steps=30", "trainer.eval_every=5", "trainer.save_model=false",
              f"trainer.validators=[{','.join(LABEL_FREE)}]")
    res = run_experiment(tiny_config(*common), tmp_path / "tta")
    sel = res["selection"]
    for name in LABEL_FREE:
        best = max(res["history"], key=lambda r: r[f"score/{name}"])
        assert sel[name]["step"] == best["step"], name
    assert "last" in sel and sel["last"]["step"] == res["history"][-1]["step"]
