"""Shallow DA on precomputed features: CORAL and OT-DA must undo a known shift; Office-Caltech at small scale."""
import numpy as np
import pytest

from dacl.data.features import office_caltech_surf
from dacl.errors import DataError
from dacl.methods.da.feature_space import adapt_and_score, coral, l1_zscore


def _shifted_blobs(seed=0, n=120):
    """Three classes; the target is the source linearly distorted (anisotropic scale + offset)."""
    rng = np.random.default_rng(seed)
    means = np.array([[0, 0], [3, 0], [0, 3]], dtype=float)
    y = np.repeat(np.arange(3), n // 3)
    xs = means[y] + 0.6 * rng.standard_normal((len(y), 2))
    a = np.diag([1.6, 0.8])  # anisotropic rescaling
    xt = (means[y] + 0.6 * rng.standard_normal((len(y), 2))) @ a + np.array([3.0, 3.0])
    return xs, y, xt, y.copy()


def test_coral_matches_target_covariance():
    xs, ys, xt, _ = _shifted_blobs()
    xs_a, _ = coral(xs, ys, xt, eps=1e-6)
    assert np.allclose(np.cov(xs_a, rowvar=False), np.cov(xt, rowvar=False), atol=1e-3)


@pytest.mark.parametrize("adapter", ["ot_emd", "ot_sinkhorn", "ot_gl", "ot_lpl1"])
def test_ot_adapters_undo_a_linear_shift(adapter):
    xs, ys, xt, yt = _shifted_blobs()
    base = adapt_and_score(xs, ys, xt, yt, "none")["1nn"]
    adapted = adapt_and_score(xs, ys, xt, yt, adapter)["1nn"]
    assert base < 0.7 and adapted > 0.9, f"{adapter}: {base:.2f} -> {adapted:.2f}"


def test_office_caltech_surf_small_scale(shared_data):
    """Webcam -> DSLR (295 -> 157 examples): group-lasso OT beats no adaptation with 1-NN."""
    d = {k: (l1_zscore(x), y) for k, (x, y) in office_caltech_surf(shared_data).items()}
    (xs, ys), (xt, yt) = d["webcam"], d["dslr"]
    base = adapt_and_score(xs, ys, xt, yt, "none")["1nn"]
    gl = adapt_and_score(xs, ys, xt, yt, "ot_gl")["1nn"]
    assert gl > base, f"OT-GL {gl:.3f} vs none {base:.3f}"


def test_missing_feature_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="data_root"):
        office_caltech_surf(tmp_path)


@pytest.mark.slow
def test_a_feature_space_run_writes_the_one_run_record(tmp_path):
    """`dacl run method=feature_adapter` on a feature benchmark records what the library computes, in the same
    results.json schema as a trained run; a feature method on images (or the reverse) is one error line."""
    import json
    import subprocess
    import sys

    xs, ys, xt, yt = _shifted_blobs(n=90)
    pad = np.zeros((len(xs), 6))  # six noise dimensions (a constant column could not be z-scored)
    rng = np.random.default_rng(1)
    arrays = {"x_amazon": np.hstack([xs, pad + rng.random(pad.shape)]), "y_amazon": ys,
              "x_webcam": np.hstack([xt, pad + rng.random(pad.shape)]), "y_webcam": yt}
    for d in ("caltech10", "dslr"):
        arrays |= {f"x_{d}": arrays["x_amazon"], f"y_{d}": ys}
    np.savez(tmp_path / "office_caltech10_surf800.npz", **arrays)

    def dacl(*args):
        return subprocess.run([sys.executable, "-m", "dacl", "run", *args, f"data_root={tmp_path}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    proc = dacl("+experiment=office_caltech_surf", "method.adapter=ot_emd")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(next(tmp_path.rglob("results.json")).read_text())
    expected = adapt_and_score(l1_zscore(arrays["x_amazon"]), ys, l1_zscore(arrays["x_webcam"]), yt, "ot_emd",
                               ("1nn", "linear_svm"))
    assert record["kind"] == "feature_space" and record["task"] == "amazon->webcam"
    assert record["metrics"]["classifier_acc"] == expected
    assert record["metrics"]["target_test_acc"] == {"fixed": expected["1nn"]} and record["status"] == "ok"
    for bad in (["method=dann", "benchmark=office_caltech_surf"], ["method=feature_adapter", "benchmark=synthetic_shift"]):
        proc = dacl(*bad)
        assert proc.returncode == 2 and proc.stderr.count("dacl: error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
