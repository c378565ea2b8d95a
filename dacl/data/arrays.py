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
    """One domain's train/test split as host arrays: images (N,H,W) or (N,H,W,C) uint8, labels int64.

    Everything is checked here, once, before any training: a wrong dtype, value range, layout, channel count or
    label would otherwise train silently on wrong numbers (float [0, 1] images divided by 255 again, channel-first
    arrays read as 1-pixel-wide images, negative labels ignored by the accuracy).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    origin: str = ""  # the file the arrays came from, named in error messages

    def __post_init__(self) -> None:
        where = self.origin or self.name
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check_images(x, f"{where}: x_{split}")
            setattr(self, f"y_{split}", check_labels(y, len(x), f"{where}: y_{split}"))
        if int(self.y_test.max()) > int(self.y_train.max()):
            raise DataError(f"{where}: y_test holds class {int(self.y_test.max())}, which y_train never has (max "
                            f"{int(self.y_train.max())}); both splits must share the class indices 0..C-1")

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def check_images(x: np.ndarray, what: str) -> None:
    """uint8 images, (N,H,W) or channel-last (N,H,W,C) with 1 or 3 channels, at least one of them."""
    if x.ndim not in (3, 4):
        raise DataError(f"{what} must be (N,H,W) or (N,H,W,C) images, got shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"{what} is empty (shape {x.shape}); every split needs at least one image")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating):
            finite = np.isfinite(x)
            if not finite.all():
                raise DataError(f"{what} holds {int((~finite).sum())} NaN/inf value(s) ({x.dtype}); dacl reads uint8 "
                                f"images 0-255: repair or drop those images, then save them as uint8")
            lo, hi = float(x.min()), float(x.max())
            fix = "(x * 255).round().astype(np.uint8)" if hi <= 1.0 else "x.round().clip(0, 255).astype(np.uint8)"
            scale = " (a 0-1 range)" if lo >= 0.0 and hi <= 1.0 else ""
            raise DataError(f"{what} is {x.dtype} with values in [{lo:.3g}, {hi:.3g}]{scale}; dacl reads uint8 images 0-255 "
                            f"(it divides by 255), so save them as uint8, e.g. {fix}")
        lo, hi = int(x.min()), int(x.max())
        raise DataError(f"{what} is {x.dtype} with values in [{lo}, {hi}]; dacl reads uint8 images 0-255: "
                        f"save them as uint8" + (" (x.astype(np.uint8))" if 0 <= lo and hi <= 255 else ""))
    if x.ndim == 4:
        n, a, b, c = x.shape
        if c not in (1, 3) and a in (1, 3) and b == c:
            raise DataError(f"{what} has shape {x.shape}, which looks channel-first (N,C,H,W); dacl reads channel-last "
                            f"(N,H,W,C) images: save np.moveaxis(x, 1, -1)")
        if c not in (1, 3):
            raise DataError(f"{what} has {c} channels (shape {x.shape}); images must be grey (1) or RGB (3) channel-last "
                            f"(N,H,W,C)" + (": drop the alpha channel, x[..., :3]" if c == 4 else ""))


def check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """1-D integer class indices 0..C-1, one per image; returned as int64."""
    y = np.asarray(y)
    if y.ndim != 1:
        fix = ": y.reshape(-1)" if y.size == n else ""
        raise DataError(f"{what} must be 1-D, one class index per image, got shape {y.shape}{fix}")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels for {n} images; the file is inconsistent")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        whole = np.issubdtype(y.dtype, np.floating) and bool(np.isfinite(y).all()) and bool((y == np.round(y)).all())
        raise DataError(f"{what} is {y.dtype}; labels must be integer class indices 0..C-1"
                        + (" (they are whole numbers: save y.astype(np.int64))" if whole else
                           " (some are NaN, inf or fractional: repair them)"))
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{what} holds negative label(s) (min {int(y.min())}); labels must be class indices 0..C-1 "
                        f"(drop unlabelled rows instead of marking them -1)")
    return y.astype(np.int64)


REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path, keys: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz``; missing, truncated or malformed files raise ``DataError``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, but dacl expects a .npz file there; remove or rename the folder")
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
    except PermissionError as exc:
        raise DataError(f"cannot read {path}: permission denied; give your user read access (chmod a+r {path}) "
                        f"or copy the file somewhere readable") from exc
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"corrupt or unreadable .npz file {path} ({type(exc).__name__}: {exc}); re-create or re-download it "
                        f"(checksums for the shared copies are in SHA256SUMS)") from exc


def load_bundle(path: str | Path, name: str | None = None) -> DomainArrays:
    """A generic ``x_train/y_train/x_test/y_test`` bundle, the layout of ``../shared/data``."""
    arrays = load_npz(path)
    return DomainArrays(name=name or Path(path).stem, **arrays, origin=str(path))
