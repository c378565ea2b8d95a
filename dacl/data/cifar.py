"""CIFAR-10 / CIFAR-100 and CIFAR-10-C in their published layouts, read without unpickling anything.

CIFAR's "python version" is a pickle; dacl reads the *binary version* instead (Krizhevsky's page publishes both):
``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` with records of 1 label byte + 3,072 pixel bytes (R, G, B
planes), ``cifar-100-binary/{train,test}.bin`` with a coarse and a fine label byte. CIFAR-10-C (Hendrycks &
Dietterich 2019, zenodo 2535967) is ``CIFAR-10-C/<corruption>.npy`` (50,000 x 32 x 32 x 3 uint8: severities 1-5,
10,000 test images each, in order) and ``labels.npy``; ``.npy`` files load with ``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dacl.data.arrays import DomainArrays
from dacl.data.download import Download, ensure
from dacl.errors import DataError
from dacl.registry import DATASETS

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
               "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
CIFAR10_BINARY = Download("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                          md5="c32a1d4ab5d03f1284b67883e8d87530", unpacks_to="cifar-10-batches-bin")
CIFAR100_BINARY = Download("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "cifar-100-binary.tar.gz",
                           md5="03b5dff3226ee3d0ca5a4af6d7bd3a4a", unpacks_to="cifar-100-binary")
CIFAR10_C = Download("https://zenodo.org/record/2535967/files/CIFAR-10-C.tar", "CIFAR-10-C.tar", unpacks_to="CIFAR-10-C")


def _root(name: str, data_root: str | None, download: bool, files: Download, layout: str) -> Path:
    if not data_root:
        raise DataError(f"{name} needs data_root=<folder holding {layout}> (or download=true with internet); "
                        f"`dacl data synth {name} --out DIR` writes a synthetic copy in that layout")
    root = Path(data_root).expanduser()
    if download:
        ensure(root, [files], name)
    if not (root / files.unpacks_to).is_dir():
        raise DataError(f"{name} not found under {root}: expected {layout}; set download=true where internet is "
                        f"available, or `dacl data synth {name} --out {root}`")
    return root


def read_cifar_binary(paths: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of ``label_bytes`` label bytes (the last one is the class) + a 3 x 32 x 32 image; -> NHWC uint8."""
    record = label_bytes + 3072
    chunks = []
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p} not found (CIFAR binary version)")
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size % record:
            raise DataError(f"{p}: {raw.size} bytes is not a whole number of {record}-byte records; the file is "
                            "truncated or not the binary version")
        chunks.append(raw.reshape(-1, record))
    raw = np.concatenate(chunks)
    images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), raw[:, label_bytes - 1].astype(np.int64)


@DATASETS.register("cifar10")
def cifar10(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """CIFAR-10 (binary version): 50,000 / 10,000 32 x 32 RGB images, 10 classes."""
    root = _root("cifar10", data_root, download, CIFAR10_BINARY, "cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin")
    folder = root / "cifar-10-batches-bin"
    x_tr, y_tr = read_cifar_binary([folder / f"data_batch_{i}.bin" for i in range(1, 6)], 1)
    x_te, y_te = read_cifar_binary([folder / "test_batch.bin"], 1)
    return DomainArrays("cifar10", x_tr, y_tr, x_te, y_te, origin=str(folder))


@DATASETS.register("cifar100")
def cifar100(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """CIFAR-100 (binary version), fine labels: 50,000 / 10,000 images, 100 classes."""
    root = _root("cifar100", data_root, download, CIFAR100_BINARY, "cifar-100-binary/train.bin, test.bin")
    folder = root / "cifar-100-binary"
    x_tr, y_tr = read_cifar_binary([folder / "train.bin"], 2)
    x_te, y_te = read_cifar_binary([folder / "test.bin"], 2)
    return DomainArrays("cifar100", x_tr, y_tr, x_te, y_te, origin=str(folder))


@DATASETS.register("cifar10_c")
def cifar10_c(corruption: str | list[str] = "gaussian_noise", severity: int = 5, data_root: str | None = None,
              download: bool = False) -> DomainArrays:
    """One corruption at one severity of CIFAR-10-C: the 10,000 corrupted CIFAR-10 test images (train = test: the
    test-time protocol adapts on the very batches it predicts). A list of corruptions: their sets one after another."""
    if not isinstance(corruption, str):
        parts = [cifar10_c(c, severity, data_root, download) for c in corruption]
        xs, ys = np.concatenate([p.x_test for p in parts]), np.concatenate([p.y_test for p in parts])
        return DomainArrays(f"cifar10_c{severity}", xs, ys, xs, ys, origin=parts[0].origin.rsplit("/", 1)[0])
    if corruption not in CORRUPTIONS:
        raise DataError(f"unknown CIFAR-10-C corruption '{corruption}'; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise DataError(f"CIFAR-10-C severity must be 1..5, got {severity}")
    root = _root("cifar10_c", data_root, download, CIFAR10_C, "CIFAR-10-C/<corruption>.npy and CIFAR-10-C/labels.npy")
    folder = root / "CIFAR-10-C"
    try:
        x = np.load(folder / f"{corruption}.npy", mmap_mode="r", allow_pickle=False)
        y = np.load(folder / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}: cannot read {corruption}.npy / labels.npy ({exc})") from exc
    if len(x) != len(y) or len(x) % 5:
        raise DataError(f"{folder}: {corruption}.npy has {len(x)} images and labels.npy {len(y)}; expected equal "
                        "counts, five severities of the same test set")
    n = len(x) // 5
    rows = slice((severity - 1) * n, severity * n)
    xs, ys = np.ascontiguousarray(x[rows]), np.asarray(y[rows], dtype=np.int64)
    return DomainArrays(f"cifar10_c_{corruption}{severity}", xs, ys, xs, ys, origin=str(folder / f"{corruption}.npy"))
