"""Office-style object-recognition domains: the shared Office-Caltech-10 npz, or any ImageFolder tree.

Office benchmarks are transductive: the whole target domain is both the unlabelled training set and
the test set (its labels only score), and the whole source domain trains. ``x_train`` and ``x_test``
therefore hold the same images; the source-validation split is carved out by the benchmark.
The ImageFolder path (``<root>/<domain>/<class>/*.jpg``, or Office-31's ``<domain>/images/<class>``)
lets users with Office-31 or Office-Home run the same configs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dacl.data.arrays import DomainArrays, load_npz
from dacl.errors import DataError
from dacl.registry import DATASETS

OFFICE_CALTECH_IMAGES = "office_caltech10_96px.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def _transductive(name: str, x: np.ndarray, y: np.ndarray) -> DomainArrays:
    return DomainArrays(name, x, y, x, y)


@DATASETS.register("office_caltech")
def office_caltech(domain: str, data_root: str | None = None, download: bool = False) -> DomainArrays:
    """One Office-Caltech-10 domain (amazon, caltech10, dslr, webcam) at 96x96 from the shared npz."""
    if not data_root:
        raise DataError(f"office_caltech needs data_root=<folder containing {OFFICE_CALTECH_IMAGES}> (e.g. ../shared/data)")
    path = Path(data_root).expanduser() / OFFICE_CALTECH_IMAGES
    domains = ("amazon", "caltech10", "dslr", "webcam")
    if domain not in domains:
        raise DataError(f"unknown Office-Caltech domain '{domain}'; choose one of {', '.join(domains)}")
    arrays = load_npz(path, (f"x_{domain}", f"y_{domain}"))
    return _transductive(f"office_caltech_{domain}", arrays[f"x_{domain}"], arrays[f"y_{domain}"])


def _class_root(folder: Path) -> Path:
    """Office-31 nests classes under ``images/``; accept both layouts."""
    return folder / "images" if (folder / "images").is_dir() and not any(folder.glob("*.jpg")) else folder


@DATASETS.register("image_folder")
def image_folder(path: str, image_size: int = 96, data_root: str | None = None, download: bool = False,
                 classes: list[str] | None = None) -> DomainArrays:
    """A domain stored as ``<path>/<class>/<image>``; images are resized to ``image_size`` squared (RGB).

    ``classes`` fixes the label order (pass the same list for source and target); default: sorted folder names.
    A relative ``path`` is resolved against ``data_root``.
    """
    from PIL import Image

    folder = Path(path).expanduser()
    if not folder.is_absolute() and data_root:
        folder = Path(data_root).expanduser() / folder
    if not folder.is_dir():
        raise DataError(f"image folder '{folder}' not found; expected <domain>/<class>/<image> (e.g. Office-31's amazon/images/...)")
    root = _class_root(folder)
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(classes) if classes else found
    missing = [c for c in classes if c not in found]
    if missing or not classes:
        raise DataError(f"{root}: class folders {missing or '(none)'} missing; found {found}")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for img_path in sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(img_path) as im:
                    xs.append(np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)))
            except OSError as exc:
                raise DataError(f"unreadable image {img_path} ({exc}); remove or replace it") from exc
            ys.append(label)
    if not xs:
        raise DataError(f"no images with suffixes {sorted(IMAGE_SUFFIXES)} under {root}")
    return _transductive(folder.name, np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64))
