"""Office-31, Office-Home, VisDA-2017 and DomainNet as ``DomainPair``s: streamed from their image files, or loaded
whole into tensors where that fits the configured budget.

``storage=auto`` decides from the dataset and the config alone (decoded size against ``memory_budget_mb``), never
from the machine, so a configuration means the same run everywhere. Streamed training images go through the
train pipeline (resize, random-resized crop, flip) in DataLoader workers; evaluation and in-memory images through
the test pipeline (resize, centre crop).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from dacl.benchmarks.domain_pair import DomainPair
from dacl.data.layouts import LAYOUTS, dataset_root, layout, read_image_list
from dacl.data.streaming import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, standard_transform
from dacl.errors import ConfigError
from dacl.registry import BENCHMARKS

STORAGES = ("auto", "memory", "stream")


def _labels(y: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.as_tensor(y, dtype=torch.long, device=device)


def load_image_list_pair(dataset: str, source: str, target: str, data_root: str | None = None, download: bool = False,
                         **options: Any) -> DomainPair:
    """One source -> target task of an image-list benchmark (domains as the layout names them)."""
    lay = layout(dataset)
    root = dataset_root(lay, data_root, download)
    lists: dict[str, tuple[list[str], np.ndarray]] = {}  # transductive layouts name one file for train and test

    def read(domain: str, split: str) -> tuple[list[str], np.ndarray]:
        name = lay.list_file(domain, split)
        if name not in lists:
            lists[name] = read_image_list(root, name, lay.num_classes)
        return lists[name]

    return image_files_pair(f"{dataset}_{source}_{target}", f"{source}->{target}", lay.num_classes,
                            read(source, "train"), read(source, "test"), read(target, "train")[0],
                            read(target, "test"), **options)


Files = tuple[list[str], np.ndarray]


def image_files_pair(name: str, task: str, num_classes: int, source: Files, source_test: Files, target_files: list[str],
                     target_test: Files, image_size: int = 224, resize: int = 256, train_crop: str = "random_resized",
                     interpolation: str = "bilinear", storage: str = "auto", memory_budget_mb: int = 2048,
                     workers: int = 2, val_fraction: float = 0.1, split_seed: int = 0,
                     max_source_train: int | None = None, max_target_train: int | None = None,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     device: torch.device | str = "cpu", hold_out_val: bool = True) -> DomainPair:
    """A DomainPair over image files: the source split into train and a held-out validation part (``split_seed``),
    images in memory or streamed (``storage``), train pipeline on streamed training images, test pipeline elsewhere.
    ``hold_out_val=False``: every source image trains and the validation set is the training images themselves (a
    labelled budget too small to split)."""
    if storage not in STORAGES:
        raise ConfigError(f"benchmark.storage must be one of {', '.join(STORAGES)}, got '{storage}'")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"benchmark.val_fraction must be in (0, 1), got {val_fraction}")
    src_files, src_y = source
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(src_files))
    n_val = int(round(val_fraction * len(perm))) if hold_out_val else 0
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if max_source_train is not None and max_source_train < len(tr_idx):
        tr_idx = np.sort(rng.permutation(tr_idx)[:max_source_train])
    if not hold_out_val:
        val_idx = tr_idx
    src_test_files, src_test_y = source_test
    tgt_keep = np.arange(len(target_files))
    if max_target_train is not None and max_target_train < len(tgt_keep):
        tgt_keep = np.sort(rng.permutation(tgt_keep)[:max_target_train])
    tgt_test_files, tgt_test_y = target_test

    total = len(src_files) + len(src_test_files) + len(target_files) + len(tgt_test_files)
    decoded_mb = total * 3 * image_size * image_size * 4 / 2**20
    streamed = storage == "stream" or (storage == "auto" and decoded_mb > memory_budget_mb)
    train_tf = standard_transform(True, image_size, resize, train_crop, interpolation)
    test_tf = standard_transform(False, image_size, resize, interpolation=interpolation)

    def images(files: list[str], rows: np.ndarray | None, train: bool) -> Any:
        picked = [files[i] for i in rows] if rows is not None else files
        view = ImageFiles(picked, train_tf if train and streamed else test_tf, image_size, mean, std, device, workers)
        if streamed:
            return view
        return torch.cat(list(view.batches(256))) if len(view) else torch.empty((0, 3, image_size, image_size), device=device)

    return DomainPair(
        name=name, task=task, num_classes=num_classes, in_channels=3, image_size=image_size,
        source_train=(images(src_files, tr_idx, True), _labels(src_y[tr_idx], device)),
        source_val=(images(src_files, val_idx, False), _labels(src_y[val_idx], device)),
        source_test=(images(src_test_files, None, False), _labels(src_test_y, device)),
        target_train_x=images(target_files, tgt_keep, True),
        target_test=(images(tgt_test_files, None, False), _labels(tgt_test_y, device)),
    )


def _register(name: str) -> None:
    lay = LAYOUTS[name]

    def preset(source: str, target: str, **options: Any) -> DomainPair:
        return load_image_list_pair(name, source, target, **options)

    preset.__doc__ = (f"{name}: {lay.num_classes} classes, domains {', '.join(lay.lists)} (image lists; "
                      f"streamed at 224 px unless they fit benchmark.memory_budget_mb)")
    preset.__name__ = name
    BENCHMARKS.register(name)(preset)


for _name in LAYOUTS:
    _register(_name)


@BENCHMARKS.register("imagenet_c")
def imagenet_c_pair(corruption: str = "gaussian_noise", severity: int = 5, source_dir: str = "imagenet/val",
                    target_dir: str = "ImageNet-C", data_root: str | None = None, download: bool = False,
                    image_size: int = 224, resize: int = 256, workers: int = 2, val_fraction: float = 0.1,
                    split_seed: int = 0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    device: torch.device | str = "cpu") -> DomainPair:
    """Clean ImageNet images (``<source_dir>/<wnid>/*``, e.g. the validation set in class folders) -> one ImageNet-C
    cell (``<target_dir>/<corruption>/<severity>/<wnid>/*``), streamed at 224 px with the test pipeline, labels in
    sorted-wnid order (ImageNet's class index). For test-time adaptation of a pre-trained model (model=timm
    model.pretrained=true): the source split only scores the source model."""
    from pathlib import Path

    from dacl.data.imagenet import imagenet_c_files
    from dacl.errors import DataError

    if not data_root:
        raise DataError("imagenet_c needs data_root=<folder holding imagenet/val/<wnid>/ and ImageNet-C/>")
    root = Path(data_root).expanduser()
    clean = root / source_dir
    if not clean.is_dir():
        raise DataError(f"clean ImageNet folder {clean} not found: expected <wnid>/*.JPEG class folders "
                        "(benchmark.source_dir names it relative to data_root)")
    wnids = sorted(p.name for p in clean.iterdir() if p.is_dir())
    pairs = [(str(f), i) for i, w in enumerate(wnids) for f in sorted((clean / w).iterdir())]  # one listing
    src_files, src_y = [f for f, _ in pairs], np.asarray([i for _, i in pairs], dtype=np.int64)
    tgt_files, tgt_y = imagenet_c_files(root / target_dir, corruption, severity, wnids)
    perm = np.random.default_rng(split_seed).permutation(len(src_files))
    n_val = int(round(val_fraction * len(perm)))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    test_tf = standard_transform(False, image_size, resize)
    view = lambda files: ImageFiles(files, test_tf, image_size, mean, std, device, workers)  # noqa: E731
    pick = lambda idx: [src_files[i] for i in idx]  # noqa: E731
    return DomainPair(
        name=f"imagenet_c_{corruption}{severity}", task=f"imagenet->imagenet_c_{corruption}{severity}",
        num_classes=len(wnids), in_channels=3, image_size=image_size,
        source_train=(view(pick(tr_idx)), _labels(src_y[tr_idx], device)),
        source_val=(view(pick(val_idx)), _labels(src_y[val_idx], device)),
        source_test=(view(src_files), _labels(src_y, device)),
        target_train_x=view(tgt_files),
        target_test=(view(tgt_files), _labels(tgt_y, device)),
    )
