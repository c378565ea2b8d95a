"""Synthetic copies of the large benchmarks in their exact on-disk layouts (``dacl data synth <benchmark>``).

Every image is a smooth random picture (a coarse random grid upsampled, plus a class-dependent tint, so a network can
learn something and JPEG files have realistic sizes and decode costs). The trees exercise the loaders, the
streaming path and the recipes end to end without the real data; nothing trained on them is a result.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from dacl.data.cifar import CORRUPTIONS
from dacl.data.layouts import LAYOUTS, layout
from dacl.errors import DataError


def _picture(rng: np.random.Generator, label: int, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: a 4x4 random grid upsampled bilinearly, tinted by the class."""
    from PIL import Image

    hue = np.array([np.cos(2 * np.pi * (label / num_classes + k / 3)) for k in range(3)]) * 60
    grid = np.clip(rng.normal(128, 45, (4, 4, 3)) + hue, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize(size, Image.BILINEAR))


def _write_images(jobs: list[tuple[str, int, int, int, tuple[int, int]]]) -> None:
    from PIL import Image

    for path, label, num_classes, seed, size in jobs:
        Image.fromarray(_picture(np.random.default_rng(seed), label, num_classes, size)).save(path, quality=90)


def _parallel(jobs: list, workers: int) -> None:
    """Encode images in ``workers`` processes (JPEG encoding dominates the writer's time)."""
    chunks = [jobs[i::max(1, workers)] for i in range(max(1, workers))]
    if workers <= 1 or len(jobs) < 256:
        _write_images(jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_images, chunks))


def write_image_lists(name: str, out: Path, images: int, seed: int = 0, workers: int = 1) -> Path:
    """``images`` pictures spread round-robin over the layout's list files and classes; returns the dataset folder."""
    lay = layout(name)
    root = out / lay.folder
    lists = sorted({f for splits in lay.lists.values() for f in splits.values()})
    owner = {f: d for d, splits in lay.lists.items() for f in splits.values()}
    rows: dict[str, list[str]] = {f: [] for f in lists}
    jobs = []
    for i in range(images):
        list_file = lists[i % len(lists)]
        domain, label = owner[list_file], (i // len(lists)) % lay.num_classes
        cls = lay.classes[label]
        folder = lay.image_dirs[domain].format(cls=cls)
        split = Path(list_file).stem.rsplit("_", 1)[-1] if not lay.transductive else "img"
        rel = f"{folder}/{split}_{i:07d}{lay.suffix}"
        rows[list_file].append(f"{rel} {label}")
        jobs.append((str(root / rel), label, lay.num_classes, seed * 10_000_019 + i, lay.image_shape))
    for folder in {str(Path(j[0]).parent) for j in jobs}:
        os.makedirs(folder, exist_ok=True)
    _parallel(jobs, workers)
    (root / "image_list").mkdir(parents=True, exist_ok=True)
    for list_file, lines in rows.items():
        (root / list_file).write_text("\n".join(lines) + ("\n" if lines else ""))
    return root


def write_cifar(out: Path, images: int, seed: int = 0, hundred: bool = False) -> Path:
    """CIFAR-10 / -100 binary version: ``images`` training records (test: a fifth as many)."""
    rng = np.random.default_rng(seed)
    classes, label_bytes = (100, 2) if hundred else (10, 1)
    folder = out / ("cifar-100-binary" if hundred else "cifar-10-batches-bin")
    folder.mkdir(parents=True, exist_ok=True)

    def records(n: int) -> bytes:
        labels = np.arange(n) % classes
        pixels = np.stack([_picture(rng, int(c), classes, (32, 32)).transpose(2, 0, 1).reshape(-1) for c in labels])
        head = np.stack([labels // 5, labels] if hundred else [labels], axis=1).astype(np.uint8)[:, -label_bytes:]
        return np.concatenate([head, pixels.astype(np.uint8)], axis=1).tobytes()

    if hundred:
        (folder / "train.bin").write_bytes(records(images))
        (folder / "test.bin").write_bytes(records(max(classes, images // 5)))
    else:
        per = max(1, images // 5)
        for b in range(1, 6):
            (folder / f"data_batch_{b}.bin").write_bytes(records(per))
        (folder / "test_batch.bin").write_bytes(records(max(classes, images // 5)))
        (folder / "batches.meta.txt").write_text("\n".join(f"class_{c}" for c in range(classes)) + "\n")
    return folder


def write_cifar10_c(out: Path, images: int, seed: int = 0) -> Path:
    """CIFAR-10-C: every corruption as (5 x images, 32, 32, 3) uint8 plus labels.npy (per severity: ``images``)."""
    rng = np.random.default_rng(seed)
    folder = out / "CIFAR-10-C"
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(images) % 10, 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    base = np.stack([_picture(rng, int(c), 10, (32, 32)) for c in labels[:images]])
    for k, corruption in enumerate(CORRUPTIONS):
        noisy = [np.clip(base.astype(np.int16) + rng.integers(-8 * s, 8 * s + 1, base.shape), 0, 255) for s in range(1, 6)]
        np.save(folder / f"{corruption}.npy", np.concatenate(noisy).astype(np.uint8))
    return folder


def write_tiny_imagenet(out: Path, images: int, seed: int = 0, workers: int = 1, classes: int = 200) -> Path:
    """Tiny ImageNet: ``images`` training JPEGs over ``classes`` wnids, a tenth as many in the labelled val split."""
    base = out / "tiny-imagenet-200"
    wnids = [f"n{10_000_000 + c:08d}" for c in range(classes)]
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    jobs, notes = [], []
    for i in range(images):
        c = i % classes
        folder = base / "train" / wnids[c] / "images"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / f"{wnids[c]}_{i}.JPEG"), c, classes, seed * 10_000_019 + i, (64, 64)))
    for i in range(max(classes, images // 10)):
        c = i % classes
        jobs.append((str(base / "val" / "images" / f"val_{i}.JPEG"), c, classes, seed * 7_000_003 + i, (64, 64)))
        notes.append(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    _parallel(jobs, workers)
    return base


def write_imagenet_c(out: Path, images: int, seed: int = 0, workers: int = 1, classes: int = 10) -> Path:
    """ImageNet-C: ``images`` JPEGs per corruption x severity cell over ``classes`` wnid folders (224 px), and as
    many clean ones in ``imagenet/val/<wnid>/`` (the clean side of the imagenet_c benchmark)."""
    root = out / "ImageNet-C"
    wnids = [f"n{10_000_000 + c:08d}" for c in range(classes)]
    jobs = []
    for i in range(max(images, classes)):
        folder = out / "imagenet" / "val" / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / f"ILSVRC2012_val_{i:08d}.JPEG"), i % classes, classes, seed + 7 * i, (256, 256)))
    for corruption in CORRUPTIONS:
        for severity in range(1, 6):
            for i in range(images):
                folder = root / corruption / str(severity) / wnids[i % classes]
                folder.mkdir(parents=True, exist_ok=True)
                jobs.append((str(folder / f"ILSVRC2012_val_{i:08d}.JPEG"), i % classes, classes, seed + i, (224, 224)))
    _parallel(jobs, workers)
    return root


WRITERS: dict[str, Callable[..., Path]] = {
    **{name: (lambda name: lambda out, images, seed, workers: write_image_lists(name, out, images, seed, workers))(name)
       for name in LAYOUTS},
    "cifar10": lambda out, images, seed, workers: write_cifar(out, images, seed),
    "cifar100": lambda out, images, seed, workers: write_cifar(out, images, seed, hundred=True),
    "cifar10_c": lambda out, images, seed, workers: write_cifar10_c(out, images, seed),
    "tiny_imagenet": lambda out, images, seed, workers: write_tiny_imagenet(out, images, seed, workers),
    "imagenet_c": lambda out, images, seed, workers: write_imagenet_c(out, images, seed, workers),
}


def write_synthetic(benchmark: str, out: str | Path, images: int, seed: int = 0, workers: int = 1) -> Path:
    """Write a synthetic ``benchmark`` tree under ``out``; returns the folder it created."""
    if benchmark not in WRITERS:
        raise DataError(f"no synthetic writer for '{benchmark}'; choose one of {', '.join(WRITERS)}")
    if images < 1:
        raise DataError(f"--images must be at least 1, got {images}")
    return WRITERS[benchmark](Path(out).expanduser(), images, seed, workers)
