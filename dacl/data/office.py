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


OFFICE_CALTECH_TAR = "office_caltech10_images.tar"
OFFICE_CALTECH_FOLDER = "office_caltech10"
OFFICE_CALTECH_CLASSES = ("backpack", "bike", "calculator", "headphones", "keyboard", "laptop", "monitor", "mouse", "mug",
                          "projector")  # the npz's class_names order: labels agree across the image and 96 px copies
OFFICE_CALTECH_DOMAINS = ("amazon", "caltech10", "dslr", "webcam")


def _source_of(data_root: str | None, path: str | None) -> Path:
    """The original JPEGs: ``path`` (a tar or an extracted ``office_caltech10`` tree), else the tar in data_root, else
    an extracted tree there."""
    if path:
        found = Path(path).expanduser()
        if not found.is_absolute() and data_root:
            found = Path(data_root).expanduser() / found
        if not found.exists():
            raise DataError(f"benchmark.path={path}: {found} not found; give the {OFFICE_CALTECH_TAR} file or its "
                            f"extracted {OFFICE_CALTECH_FOLDER}/ folder")
        return found
    if not data_root:
        raise DataError(f"Office-Caltech-10 images need data_root=<folder with {OFFICE_CALTECH_TAR} or "
                        f"{OFFICE_CALTECH_FOLDER}/> (e.g. ../shared/data)")
    root = Path(data_root).expanduser()
    for candidate in (root / OFFICE_CALTECH_TAR, root / OFFICE_CALTECH_FOLDER):
        if candidate.exists():
            return candidate
    raise DataError(f"neither {root / OFFICE_CALTECH_TAR} nor {root / OFFICE_CALTECH_FOLDER}/ exists; point data_root at "
                    "the folder holding the Office-Caltech-10 images")


def office_caltech_files(domains: tuple[str, ...], data_root: str | None = None,
                         path: str | None = None) -> dict[str, tuple[list[str], np.ndarray]]:
    """{domain: (image names, labels)} of the original Office-Caltech-10 JPEGs, sorted by class then file name, read
    in place from the tar (members by offset) or from an extracted tree."""
    from dacl.data.streaming import archive_member

    for d in domains:
        if d not in OFFICE_CALTECH_DOMAINS:
            raise DataError(f"unknown Office-Caltech domain '{d}'; choose one of {', '.join(OFFICE_CALTECH_DOMAINS)}")
    src = _source_of(data_root, path)
    entries: dict[str, list[tuple[str, str, str]]] = {d: [] for d in domains}  # domain -> (class, file name, path)
    if src.is_file():
        import tarfile

        try:
            with tarfile.open(src, "r:") as tar:
                members = tar.getmembers()
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{src} is not a readable uncompressed tar ({exc}); replace it or extract it") from exc
        size = src.stat().st_size
        for m in members:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 4 or parts[0] != OFFICE_CALTECH_FOLDER or parts[1] not in entries:
                continue
            if m.offset_data + m.size > size:
                raise DataError(f"{src}: member {m.name} ends past the end of the file; the archive is truncated")
            entries[parts[1]].append((parts[2], parts[3], archive_member(str(src.resolve()), m.offset_data, m.size, m.name)))
    else:
        root = src / OFFICE_CALTECH_FOLDER if (src / OFFICE_CALTECH_FOLDER).is_dir() else src
        for d in domains:
            for cls in OFFICE_CALTECH_CLASSES:
                folder = root / d / cls
                if folder.is_dir():
                    entries[d] += [(cls, f.name, str(f)) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    out = {}
    for d, rows in entries.items():
        unknown = sorted({c for c, _, _ in rows} - set(OFFICE_CALTECH_CLASSES))
        if unknown or not rows:
            raise DataError(f"{src}: domain {d} " + (f"has unknown class folders {unknown}" if unknown else
                            f"has no images (expected {OFFICE_CALTECH_FOLDER}/{d}/<class>/<file>.jpg)"))
        rows.sort(key=lambda r: (OFFICE_CALTECH_CLASSES.index(r[0]), r[1]))
        out[d] = ([p for _, _, p in rows], np.asarray([OFFICE_CALTECH_CLASSES.index(c) for c, _, _ in rows], np.int64))
    return out
