"""The digits corruption suite: deterministic per seed, shape/dtype/range kept, severity means more damage."""
import numpy as np
import pytest

from dacl.data.corruptions import CORRUPTIONS, corrupt, grid_png


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x = np.kron(load_digits().images[:64], np.ones((3, 3)))  # 24x24
    return np.round(x * 255 / 16).astype(np.uint8)


def test_at_least_ten_corruptions():
    assert len(CORRUPTIONS) >= 10


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_deterministic_and_keeps_the_format(name, digits):
    a, b = corrupt(digits, name, 3, seed=0), corrupt(digits, name, 3, seed=0)
    assert np.array_equal(a, b) and a.shape == digits.shape and a.dtype == np.uint8
    assert not np.array_equal(a, digits), f"{name} left the images unchanged"
    damage = [np.abs(corrupt(digits, name, s).astype(float) - digits).mean() for s in (1, 5)]
    assert damage[1] > damage[0], f"{name}: severity 5 should damage more than severity 1 ({damage})"


def test_random_corruptions_depend_on_the_seed_and_rgb_works(digits):
    assert not np.array_equal(corrupt(digits, "gaussian_noise", 2, seed=0), corrupt(digits, "gaussian_noise", 2, seed=1))
    rgb = np.repeat(digits[..., None], 3, axis=3)
    out = corrupt(rgb, "elastic", 4)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_bad_names_and_severities_are_rejected(digits):
    with pytest.raises(KeyError, match="gaussian_noise"):
        corrupt(digits, "gausian_noise", 1)
    with pytest.raises(ValueError, match="1..5"):
        corrupt(digits, "fog", 6)


def test_grid_png(digits, tmp_path):
    grid_png(digits, str(tmp_path / "grid.png"))
    from PIL import Image

    im = Image.open(tmp_path / "grid.png")
    assert im.size[1] > len(CORRUPTIONS) * 24
