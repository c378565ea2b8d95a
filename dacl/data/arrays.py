"""Array bundles: uint8 image arrays + int labels, loaded from ``.npz`` with errors that name the fix."""
from __future__ import annotations

import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dacl.errors import DataError


@dataclass
class DomainArrays:
    """One domain's train/test split as host arrays: images (N,H,W) or (N,H,W,C) uint8, labels int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{split} has {len(x)} rows but y_{split} has {len(y)}; the file is inconsistent")
            if x.ndim not in (3, 4):
                raise DataError(f"{self.name}: x_{split} must be (N,H,W) or (N,H,W,C) images, got shape {x.shape}")
        self.y_train = self.y_train.astype(np.int64)
        self.y_test = self.y_test.astype(np.int64)

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path, keys: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz``; missing, truncated or malformed files raise ``DataError``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}. Set data_root=<folder containing {path.name}> (e.g. data_root=../shared/data)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path} lacks array(s) {missing} (has {sorted(f.files)}); expected keys {list(keys)}")
            return {k: f[k] for k in keys}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"corrupt or unreadable .npz file {path} ({type(exc).__name__}: {exc}); re-create or re-download it "
                        f"(checksums for the shared copies are in SHA256SUMS)") from exc


def load_bundle(path: str | Path, name: str | None = None) -> DomainArrays:
    """A generic ``x_train/y_train/x_test/y_test`` bundle, the layout of ``../shared/data``."""
    arrays = load_npz(path)
    return DomainArrays(name=name or Path(path).stem, **arrays)
