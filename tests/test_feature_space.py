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
