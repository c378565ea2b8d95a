"""Analysis tools: proxy A-distance, validator study, calibration and t-SNE plots."""
import math

import pytest
import torch

from dacl.analysis.domain import draw_reliability, draw_tsne, proxy_a_distance, reliability_curve, tsne_embedding
from dacl.analysis.validator_study import study, validators_in


def test_proxy_a_distance_is_near_zero_for_one_domain_and_near_two_for_separated_ones():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 16, generator=g), torch.randn(800, 16, generator=g)
    assert proxy_a_distance(a, b) < 0.25
    assert proxy_a_distance(a, b + 3.0) > 1.9
    mid = proxy_a_distance(a, b + 0.3)
    assert 0.25 < mid < 1.9, "a small shift gives an intermediate distance"


def _run(method, accs, good, bad):
    """A run whose 'good' validator tracks target accuracy and whose 'bad' one is anti-correlated."""
    hist = [{"step": i, "target_test_acc": a, "score/good": g, "score/bad": b} for i, (a, g, b) in enumerate(zip(accs, good, bad))]
    return {"method": method, "history": hist}


def test_validator_study_ranks_a_tracking_validator_above_an_anti_correlated_one():
    runs = [_run("dann", [0.5, 0.7, 0.9, 0.8], [1, 2, 4, 3], [4, 3, 1, 2]),
            _run("dann", [0.6, 0.65, 0.62, 0.61], [1, 3, 2, 1.5], [3, 1, 2, 2.5]),
            _run("mmd", [0.4, 0.3, 0.45, 0.2], [2, 1, 3, 0], [1, 2, 0, 3])]
    assert validators_in(runs) == ["bad", "good"]
    runs[0]["history"][0]["score/source_val"] = 0.0
    for r in runs:
        for rec in r["history"]:
            rec["score/source_val"] = 0.0
    assert validators_in(runs) == ["source_val", "bad", "good"]
    s = study(runs)["validators"]
    assert s["good"]["spearman_within_run"] == pytest.approx(1.0)
    assert s["bad"]["spearman_within_run"] == pytest.approx(-1.0)
    assert s["good"]["selected_acc"] == {"dann": 0.9, "mmd": 0.45}  # best over all checkpoints of all trials
    assert s["bad"]["selected_acc"] == {"dann": 0.5, "mmd": 0.2}
    assert s["oracle"]["selected_acc"] == s["good"]["selected_acc"] and s["good"]["gap_to_oracle"] == pytest.approx(0.0)
    assert s["bad"]["gap_to_oracle"] == pytest.approx((0.9 + 0.45 - 0.5 - 0.2) / 2)
    assert s["good"]["spearman_pooled"] > 0.5 > s["bad"]["spearman_pooled"]


def test_validator_missing_from_a_run_is_left_out():
    runs = [_run("a", [0.1, 0.2, 0.3], [1, 2, 3], [3, 2, 1])]
    del runs[0]["history"][1]["score/bad"]
    assert validators_in(runs) == ["good"]
    assert math.isnan(study([_run("a", [0.5, 0.5, 0.5], [1, 2, 3], [1, 2, 3])])["validators"]["good"]["spearman_pooled"])


def test_reliability_and_tsne_plots(tmp_path):
    labels = torch.tensor([0, 1] * 50)
    confident_right = torch.nn.functional.one_hot(labels, 2).float() * 20
    curve = reliability_curve(confident_right, labels)
    assert curve["accuracy"] == [1.0] and curve["confidence"][0] == pytest.approx(1.0) and curve["count"] == [100]
    hedged = torch.zeros(100, 2)  # 50% confidence everywhere, right half the time: calibrated too
    assert reliability_curve(hedged, labels)["confidence"] == [pytest.approx(0.5)]
    draw_reliability({"calibrated": curve}, tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 5000
    g = torch.Generator().manual_seed(0)
    f = torch.randn(60, 8, generator=g)
    emb = tsne_embedding(f, f + 5, labels[:60], per_domain=60)
    assert len(emb["source"]) == len(emb["target"]) == 60 and sorted(emb["target_labels"]) == sorted(labels[:60].tolist())
    assert max(abs(v) for point in emb["source"] + emb["target"] for v in point) == pytest.approx(1.0)
    draw_tsne({"before": emb}, tmp_path / "tsne.png")
    assert (tmp_path / "tsne.png").stat().st_size > 5000


def test_selection_is_per_seed_then_averaged():
    runs = [dict(_run("a", [0.5, 0.9], [1, 2], [2, 1]), seed=0), dict(_run("a", [0.2, 0.3], [2, 1], [1, 2]), seed=1)]
    s = study(runs)["validators"]
    assert s["good"]["selected_acc"]["a"] == pytest.approx((0.9 + 0.2) / 2)  # never picks one seed's checkpoint for both
    assert s["oracle"]["selected_acc"]["a"] == pytest.approx((0.9 + 0.3) / 2)
