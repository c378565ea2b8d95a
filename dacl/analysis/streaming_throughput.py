"""Throughput and memory of the streaming image path against TLlib's, on one DomainNet-shaped synthetic tree.

Each cell runs in a fresh process (so its peak resident set is its own): ``pipeline`` dacl (``ImageFiles`` +
``PrefetchStream`` over a seeded ``BatchStream``) or tllib (TLlib's own ``ImageList`` + ``ResizeImage`` transforms +
``DataLoader(shuffle, drop_last)`` + ``ForeverDataIterator``, imported from a TLlib checkout), both feeding the same
timm model through the same SGD step at 224 px, batch 32. Cells with ``model: none`` time the loader alone.
It is the measurement ``streaming_throughput``: study ``throughput_streaming`` sweeps its cells.
The dataset is every image of the tree (all its image lists), so memory is measured against the dataset's size.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dacl.data.layouts import LAYOUTS
from dacl.studies.measure import measurement

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tree_images(root: Path) -> tuple[list[str], np.ndarray, Path]:
    """All lines of the tree's image lists as one dataset; also written as one list file (TLlib reads a file)."""
    lines = sorted(line for f in sorted((root / "image_list").glob("*.txt")) for line in f.read_text().splitlines() if line)
    combined = root.parent / f"{root.name}_all.txt"
    combined.write_text("\n".join(lines) + "\n")
    paths = [str(root / line.rsplit(" ", 1)[0]) for line in lines]
    return paths, np.asarray([int(line.rsplit(" ", 1)[1]) for line in lines]), combined


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _tllib_batches(tllib: Path, root: Path, combined: Path, batch: int, workers: int):
    """TLlib's pipeline as its examples build it (utils.get_train_transform 'default', ImageList, ForeverDataIterator)."""
    import typing

    import torch.utils.data.dataset as torch_dataset
    import torchvision.transforms as T

    if not hasattr(torch_dataset, "T_co"):  # TLlib imports this TypeVar, which newer torch no longer exports
        torch_dataset.T_co = typing.TypeVar("T_co", covariant=True)
    imagelist = _module(tllib / "tllib/vision/datasets/imagelist.py", "tllib_imagelist")
    transforms = _module(tllib / "tllib/vision/transforms/__init__.py", "tllib_transforms")
    data = _module(tllib / "tllib/utils/data.py", "tllib_data")
    tf = T.Compose([transforms.ResizeImage(256), T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(MEAN, STD)])
    classes = [f"c{i}" for i in range(LAYOUTS["domainnet"].num_classes)]
    dataset = imagelist.ImageList(str(root), classes, str(combined), transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    it = data.ForeverDataIterator(loader)
    while True:
        x, y = next(it)[:2]
        yield x, y


def _dacl_batches(paths: list[str], labels: np.ndarray, batch: int, workers: int):
    from dacl.data.stream import BatchStream
    from dacl.data.streaming import ImageFiles, standard_transform

    images = ImageFiles(paths, standard_transform(True), 224, MEAN, STD, "cpu", workers)
    y_all = torch.as_tensor(labels)
    follow = images.follow(BatchStream(len(paths), batch, seed=0, device="cpu"))
    while True:
        idx = follow.next_indices()
        yield images[idx], y_all[idx]


def run_cell(pipeline: str, root: Path, workers: int, steps: int, warmup: int, batch: int, model: str,
             tllib: Path | None) -> dict[str, Any]:
    """One measurement in this process: images/s over ``steps`` batches after ``warmup``; peak RSS of this process
    and of its largest finished child (a DataLoader worker)."""
    torch.manual_seed(0)
    paths, labels, combined = tree_images(root)
    batches = _dacl_batches(paths, labels, batch, workers) if pipeline == "dacl" else \
        _tllib_batches(tllib, root, combined, batch, workers)
    net = None
    if model:
        import timm

        net = timm.create_model(model, pretrained=False, num_classes=LAYOUTS["domainnet"].num_classes)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for k in range(warmup + steps):
        if k == warmup:
            t0 = time.perf_counter()
        x, y = next(batches)
        if net is not None:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    del batches  # stops the workers, so their peak RSS is counted among the children
    import gc

    gc.collect()
    mb = lambda who: resource.getrusage(who).ru_maxrss / 1024  # noqa: E731  (Linux reports kilobytes)
    return {"pipeline": pipeline, "images": len(paths), "workers": workers, "model": model or "none",
            "images_per_second": round(batch * steps / seconds, 1), "peak_rss_mb": round(mb(resource.RUSAGE_SELF), 1),
            "worker_peak_rss_mb": round(mb(resource.RUSAGE_CHILDREN), 1) if workers else None}


DEFAULTS = {"pipeline": "dacl", "images": 10_000, "workers": 0, "model": "resnet18", "steps": 8, "warmup": 2,
            "batch": 32, "trees": None, "tllib": None}


def _describe(m: dict[str, Any]) -> str:
    return f"{m['images_per_second']} img/s, peak RSS {m['peak_rss_mb']} MB"


@measurement("streaming_throughput", DEFAULTS, _describe)
def streaming_throughput(c: dict[str, Any]) -> dict[str, Any]:
    """One cell in a fresh process (its peak RSS is its own): ``pipeline`` over every image of a DomainNet-shaped
    tree of ``images`` JPEGs (written once under ``trees``), with a timm ``model`` step per batch or (model: none)
    the loader alone."""
    from dacl.data.synth import write_synthetic
    from dacl.errors import ConfigError

    if c["pipeline"] not in ("dacl", "tllib"):
        raise ConfigError(f"pipeline={c['pipeline']!r}: dacl or tllib")
    tllib = Path(c["tllib"]) if c["tllib"] else None
    if c["pipeline"] == "tllib" and not (tllib and (tllib / "tllib").is_dir()):
        raise ConfigError("pipeline=tllib needs tllib=<a checkout of thuml/Transfer-Learning-Library> (git clone "
                          "https://github.com/thuml/Transfer-Learning-Library /tmp/tllib)")
    root = Path(c["trees"] or Path("runs") / "streaming_trees") / f"domainnet_{int(c['images'])}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # cells side by side wait for the one writing the tree
        if not (root / "domainnet" / "image_list").is_dir():
            write_synthetic("domainnet", root, int(c["images"]), workers=2)
    model = "" if c["model"] in (None, "none") else str(c["model"])
    cmd = [sys.executable, "-m", "dacl.analysis.streaming_throughput", "cell", "--pipeline", c["pipeline"], "--root",
           str(root / "domainnet"), "--workers", str(c["workers"]), "--steps", str(c["steps"]), "--warmup",
           str(c["warmup"]), "--batch", str(c["batch"]), "--model", model, *(["--tllib", str(tllib)] if tllib else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"the {c['pipeline']} cell failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    if tllib is not None:
        metrics["tllib_commit"] = subprocess.run(["git", "-C", str(tllib), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip() or "(not a git checkout)"
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``python -m dacl.analysis.streaming_throughput cell ...``: one cell, its metrics as a JSON line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    cell = sub.add_parser("cell")
    cell.add_argument("--pipeline", choices=["dacl", "tllib"], required=True)
    cell.add_argument("--root", type=Path, required=True)
    cell.add_argument("--tllib", type=Path, default=None, help="a checkout of thuml/Transfer-Learning-Library")
    cell.add_argument("--steps", type=int, default=10)
    cell.add_argument("--warmup", type=int, default=2)
    cell.add_argument("--batch", type=int, default=32)
    cell.add_argument("--model", default="resnet18")
    cell.add_argument("--workers", type=int, default=0)
    ns = ap.parse_args(argv)
    print(json.dumps(run_cell(ns.pipeline, ns.root, ns.workers, ns.steps, ns.warmup, ns.batch, ns.model, ns.tllib)))


if __name__ == "__main__":
    main()
