"""Tiny ImageNet (Seq-TinyImageNet's data) and ImageNet-C, in the layouts their authors publish.

Tiny ImageNet (cs231n): ``tiny-imagenet-200/wnids.txt``, ``train/<wnid>/images/*.JPEG`` (500 per class) and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (file, wnid, box). 100,000 + 10,000 images of
64 x 64 px fit in memory as uint8, so it loads whole. ImageNet-C (Hendrycks & Dietterich 2019) is
``<corruption>/<severity>/<wnid>/*.JPEG``: 50,000 images per cell, streamed (``imagenet_c_files``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dacl.data.arrays import DomainArrays
from dacl.data.cifar import CORRUPTIONS
from dacl.data.download import Download, ensure
from dacl.errors import DataError
from dacl.registry import DATASETS

TINY_IMAGENET = Download("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                         unpacks_to="tiny-imagenet-200")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _decode(paths: list[Path], size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size)) if im.size != (size, size) else im.convert("RGB"))
        except OSError as exc:
            raise DataError(f"unreadable image {p} ({exc}); replace it") from exc
    return out


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(data_root: str | None = None, download: bool = False) -> DomainArrays:
    """Tiny ImageNet: 200 classes (wnids.txt order), train 500 per class, the labelled val split as test."""
    if not data_root:
        raise DataError("tiny_imagenet needs data_root=<folder holding tiny-imagenet-200/> (or download=true); "
                        "`dacl data synth tiny_imagenet --out DIR` writes a synthetic copy")
    root = Path(data_root).expanduser()
    if download:
        ensure(root, [TINY_IMAGENET], "tiny_imagenet")
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        raise DataError(f"tiny_imagenet not found under {root}: expected tiny-imagenet-200/wnids.txt, "
                        "train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt")
    wnids = base.joinpath("wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train, y_train = [], []
    for w in wnids:
        files = sorted((base / "train" / w / "images").glob("*"))
        train += [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        y_train += [index[w]] * (len(train) - len(y_train))
    test, y_test = [], []
    for n, line in enumerate((base / "val" / "val_annotations.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{base / 'val' / 'val_annotations.txt'}:{n}: expected '<file>\\t<wnid>\\t...' with a wnid "
                            f"of wnids.txt, got '{line}'")
        test.append(base / "val" / "images" / fields[0])
        y_test.append(index[fields[1]])
    return DomainArrays("tiny_imagenet", _decode(train, 64), np.asarray(y_train), _decode(test, 64), np.asarray(y_test),
                        origin=str(base))


def imagenet_c_files(root: str | Path, corruption: str, severity: int,
                     wnids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Paths and labels of one ImageNet-C cell; labels follow ``wnids`` (default: the sorted folder names, which is
    ImageNet's class-index order)."""
    if corruption not in CORRUPTIONS:
        raise DataError(f"unknown ImageNet-C corruption '{corruption}'; choose one of {', '.join(CORRUPTIONS)}")
    cell = Path(root).expanduser() / corruption / str(severity)
    if not cell.is_dir():
        raise DataError(f"ImageNet-C cell {cell} not found: expected <root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG")
    wnids = wnids or sorted(p.name for p in cell.iterdir() if p.is_dir())
    files, labels = [], []
    for label, w in enumerate(wnids):
        found = sorted(str(p) for p in (cell / w).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"no images under {cell}")
    return files, np.asarray(labels, dtype=np.int64)
