"""Label-free validators on hand-made predictions with a known ordering; none may read target labels."""
import pytest
import torch

from dacl.registry import VALIDATORS
from dacl.validators import EvalContext


def ctx(logits):
    return EvalContext(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), logits, None)  # no target labels


def one_hot_logits(labels, scale=10.0, classes=3):
    return torch.nn.functional.one_hot(torch.tensor(labels), classes).float() * scale


CONFIDENT_BALANCED = one_hot_logits([0, 1, 2] * 20)
COLLAPSED = one_hot_logits([0] * 60)
UNCERTAIN = torch.zeros(60, 3)


@pytest.mark.parametrize("name", ["im", "bnm"])
def test_prefers_confident_balanced_over_collapsed_and_uncertain(name):
    score = lambda lg: VALIDATORS.get(name)(ctx(lg))  # noqa: E731
    assert score(CONFIDENT_BALANCED) > score(COLLAPSED), name
    assert score(CONFIDENT_BALANCED) > score(UNCERTAIN), name


def test_entropy_prefers_confidence_even_when_collapsed():
    score = VALIDATORS.get("entropy")
    assert score(ctx(COLLAPSED)) > score(ctx(UNCERTAIN))
    assert score(ctx(COLLAPSED)) == pytest.approx(score(ctx(CONFIDENT_BALANCED)), abs=1e-3), "entropy is blind to collapse"


def test_im_known_value():
    # uniform predictions: -H(p) + H(mean p) = -log 3 + log 3 = 0; confident balanced: ~0 + log 3
    assert VALIDATORS.get("im")(ctx(UNCERTAIN)) == pytest.approx(0.0, abs=1e-6)
    assert VALIDATORS.get("im")(ctx(one_hot_logits([0, 1, 2] * 20, scale=50.0))) == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-3)


def test_snd_prefers_tight_clusters_over_scattered_predictions():
    """SND rewards dense neighbourhoods; like entropy it cannot see collapse (one cluster is densest)."""
    scattered = torch.randn(60, 3, generator=torch.Generator().manual_seed(0)) * 2.0
    score = VALIDATORS.get("snd")
    assert score(ctx(CONFIDENT_BALANCED)) > score(ctx(scattered))
    assert score(ctx(COLLAPSED)) >= score(ctx(CONFIDENT_BALANCED))


def test_trainer_records_a_selection_per_validator(tiny_config, tmp_path):
    from dacl.experiment import run_experiment

    seen = []
    if "label_spy" not in VALIDATORS.names():
        VALIDATORS.register("label_spy")(lambda c: seen.append(c.target_labels) or 0.0)
    res = run_experiment(tiny_config("method=source_only", "trainer.validators=[source_val,entropy,im,bnm,snd,dev,label_spy]"), tmp_path)
    assert seen and all(labels is None for labels in seen), "a label-free validator was handed target labels"
    assert set(res["selection"]) == {"last", "source_val", "entropy", "im", "bnm", "snd", "dev", "label_spy", "oracle"}
    for name in ("entropy", "im", "bnm", "snd", "dev"):
        best = max(res["history"], key=lambda h: h[f"score/{name}"])
        assert res["selection"][name]["step"] == best["step"]


def test_dev_weights_source_validation_errors_by_target_likeness():
    """Two models with the same source-val loss: the one that errs on target-like examples must score lower."""
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(400, 2, generator=g)
    ft = torch.randn(400, 2, generator=g) + torch.tensor([3.0, 0.0])
    fv = torch.cat([torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + torch.tensor([3.0, 0.0])])
    labels = torch.zeros(100, dtype=torch.long)
    good, bad = torch.full((100, 2), 0.0), torch.full((100, 2), 0.0)
    good[:, 0], bad[:, 0] = 5.0, 5.0
    good[:50, 0] = -5.0  # errs on the source-like half
    bad[50:, 0] = -5.0   # errs on the target-like half
    feats = {"source_train": fs, "source_val": fv, "target": ft}
    score = VALIDATORS.get("dev")
    mk = lambda lg: EvalContext(lg, labels, torch.zeros(4, 2), None, feature_fn=feats.__getitem__)  # noqa: E731
    assert score(mk(good)) > score(mk(bad))


def test_dev_risk_equals_mean_loss_for_uniform_weights():
    from dacl.validators.unsupervised import dev_risk

    losses = torch.tensor([0.5, 1.0, 2.0])
    assert dev_risk(losses, torch.ones(3)).item() == pytest.approx(losses.mean().item())
