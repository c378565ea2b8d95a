import numpy as np
import pytest
import torch

from dacl.data.arrays import load_bundle
from dacl.data.stream import BatchStream
from dacl.data.transforms import to_tensor_images
from dacl.errors import ConfigError, DataError
from dacl.registry import BENCHMARKS, DATASETS


def _write_bundle(path, n=20, shape=(8, 8)):
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=rng.integers(0, 3, n),
                        x_test=rng.integers(0, 256, (n // 2, *shape), dtype=np.uint8), y_test=np.arange(n // 2) % 3)


def test_npz_bundle_roundtrip(tmp_path):
    _write_bundle(tmp_path / "toy.npz")
    d = DATASETS.build("npz", path="toy.npz", data_root=str(tmp_path))
    assert d.x_train.shape == (20, 8, 8) and d.y_test.dtype == np.int64 and d.num_classes == 3


def test_missing_and_corrupt_files_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found.*data_root"):
        load_bundle(tmp_path / "nope.npz")
    _write_bundle(tmp_path / "good.npz")
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(raw[: len(raw) // 2])  # truncated download
    with pytest.raises(DataError, match="corrupt"):
        load_bundle(tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="lacks array"):
        load_bundle(tmp_path / "keys.npz")
    with pytest.raises(DataError, match="set data_root"):
        DATASETS.build("mnist", data_root=None)
    with pytest.raises(DataError, match="does not exist"):
        DATASETS.build("usps", data_root=str(tmp_path / "missing_dir"))


def test_svhn_loader_reads_torchvision_format(tmp_path):
    """No SVHN copy exists offline: write a tiny file in torchvision's .mat layout (X: HxWxCxN, y: 1..10)."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        labels = np.array([[10], [1], [2], [3], [10], [9]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": labels})
    d = DATASETS.build("svhn", data_root=str(tmp_path))
    assert d.x_train.shape == (6, 32, 32, 3) and d.x_test.shape == (4, 32, 32, 3)
    assert d.y_train.tolist() == [0, 1, 2, 3, 0, 9], "label 10 means digit 0"


def test_offline_sources_have_expected_shapes():
    m = DATASETS.build("mnist_5k")
    u = DATASETS.build("uci_digits")
    assert m.x_train.shape == (4000, 28, 28) and m.x_test.shape == (1000, 28, 28) and m.x_train.max() > 200
    assert u.x_train.shape == (1297, 8, 8) and u.x_test.shape == (500, 8, 8) and u.x_train.max() == 255
    assert set(np.unique(u.y_train)) == set(range(10))


def test_transform_resizes_converts_channels_and_normalises():
    x = np.full((3, 16, 16), 255, dtype=np.uint8)
    t = to_tensor_images(x, image_size=28, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    assert t.shape == (3, 3, 28, 28) and t.dtype == torch.float32
    assert torch.allclose(t, torch.ones_like(t)), "white stays white: (1 - 0.5) / 0.5 = 1"
    rgb = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    grey = to_tensor_images(rgb, image_size=32, channels=1, mean=[0.0], std=[1.0])
    assert torch.allclose(grey, torch.full_like(grey, 1 / 3))
    with pytest.raises(ValueError, match="one per channel"):
        to_tensor_images(x, image_size=28, channels=3, mean=[0.5], std=[0.5])


def test_batch_stream_covers_each_example_once_per_epoch_and_resumes():
    s = BatchStream(size=10, batch_size=3, seed=0, device="cpu")
    epoch = torch.cat([s.next_indices() for _ in range(3)])  # 9 of 10: the ragged tail is dropped
    assert len(set(epoch.tolist())) == 9
    state = s.state_dict()
    after = [s.next_indices() for _ in range(5)]
    s2 = BatchStream(size=10, batch_size=3, seed=123, device="cpu")
    s2.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(after, [s2.next_indices() for _ in range(5)]))
    with pytest.raises(ConfigError, match="exceeds"):
        BatchStream(size=2, batch_size=3, seed=0, device="cpu")


def test_domain_pair_splits_and_hides_target_labels(synthetic_pair):
    d = synthetic_pair
    sizes = d.sizes()
    assert sizes["source_val"] == round(0.1 * 1297) and sizes["source_train"] == 1297 - sizes["source_val"]
    assert d.target_train_x.shape[1:] == (1, 28, 28)
    assert not hasattr(d, "target_train_y"), "target training labels must not exist for DA methods to misuse"
    # the synthetic target really is shifted: lower contrast, brighter background
    assert d.target_train_x.mean() > d.source_train[0].mean() + 0.2


def test_shared_data_mnist_usps(shared_data):
    d = BENCHMARKS.build("mnist_usps", data_root=str(shared_data), max_source_train=500)
    assert d.sizes()["target_train"] == 7291 and d.sizes()["target_test"] == 2007
    assert d.source_train[0].shape == (500, 1, 28, 28) and d.target_test[0].shape == (2007, 1, 28, 28)
    assert d.source_val[1].shape[0] == 6000


def test_usps_torchvision_layout_fallback(tmp_path):
    """Without usps.npz, the loader reads torchvision's own files (LIBSVM 'label idx:value' lines, bz2)."""
    import bz2

    rng = np.random.default_rng(0)

    def write(name, n):
        lines = []
        for i in range(n):
            vals = rng.uniform(-1, 1, 256)
            lines.append(f"{i % 10 + 1} " + " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(vals)))
        (tmp_path / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))

    write("usps.bz2", 12)
    write("usps.t.bz2", 5)
    d = DATASETS.build("usps", data_root=str(tmp_path))
    assert d.x_train.shape == (12, 16, 16) and d.x_train.dtype == np.uint8 and d.y_train.tolist()[:3] == [0, 1, 2]
    assert d.x_test.shape == (5, 16, 16)
