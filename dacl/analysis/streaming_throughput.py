"""Throughput and memory of the streaming image path against TLlib's, on one DomainNet-shaped synthetic tree.

Each cell runs in a fresh process (so its peak resident set is its own): ``pipeline`` dacl (``ImageFiles`` +
``PrefetchStream`` over a seeded ``BatchStream``) or tllib (TLlib's own ``ImageList`` + ``ResizeImage`` transforms +
``DataLoader(shuffle, drop_last)`` + ``ForeverDataIterator``, imported from a TLlib checkout), both feeding the same
timm model through the same SGD step at 224 px, batch 32. ``--steps 0`` style data-only cells time the loader alone.
The dataset is every image of the tree (all its image lists), so memory is measured against the dataset's size.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dacl.data.layouts import LAYOUTS

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


def measure(sizes: list[int], workers: list[int], out_root: Path, tllib: Path, steps: int, warmup: int, batch: int,
            model: str, data_steps: int) -> list[dict[str, Any]]:
    """Every (size, pipeline, workers) cell, with the model and data-only, each in a fresh process."""
    from dacl.data.synth import write_synthetic

    rows = []
    for n in sizes:
        root = out_root / f"domainnet_{n}"
        if not (root / "domainnet" / "image_list").is_dir():
            write_synthetic("domainnet", root, n, workers=2)
        for pipeline in ("dacl", "tllib"):
            for w in workers:
                for m, s in ((model, steps), ("", data_steps)):
                    cmd = [sys.executable, "-m", "dacl.analysis.streaming_throughput", "cell", "--pipeline", pipeline,
                           "--root", str(root / "domainnet"), "--workers", str(w), "--steps", str(s), "--warmup",
                           str(warmup), "--batch", str(batch), "--model", m, "--tllib", str(tllib)]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    rows.append(json.loads(out.strip().splitlines()[-1]))
                    print(rows[-1], flush=True)
    return rows


def render(rows: list[dict[str, Any]], command: str, provenance: dict[str, Any], hw: dict[str, Any], tllib_commit: str,
           batch: int, model: str) -> str:
    md = ["# Streaming image path: memory and throughput (DomainNet-shaped synthetic tree, 224 px)", "",
          f"Every image of a synthetic tree written by `dacl data synth domainnet` (JPEG, 256 x 256, 345 classes) "
          f"is one dataset; each cell is a fresh process drawing batches of {batch} with the train pipeline (resize "
          f"256, random-resized crop 224, flip). 'train' cells also run a timm `{model}` SGD step on each batch "
          "(the same model and step for both pipelines); 'data' cells time the loader alone. TLlib: its own "
          f"`ImageList`, `ResizeImage` and `ForeverDataIterator` from thuml/Transfer-Learning-Library at {tllib_commit}, "
          "with a shuffling `DataLoader` as its examples build it. Peak RSS: the training process, and the largest "
          "DataLoader worker.", "",
          "| images | pipeline | workers | train img/s | data img/s | peak RSS (MB) | worker peak RSS (MB) |",
          "|---|---|---|---|---|---|---|"]
    keyed: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        keyed.setdefault((r["images"], r["pipeline"], r["workers"]), {})["data" if r["model"] == "none" else "train"] = r
    for (n, pipeline, w), cell in sorted(keyed.items()):
        t, d = cell.get("train", {}), cell.get("data", {})
        md.append(f"| {n:,} | {pipeline} | {w} | {t.get('images_per_second', '')} | {d.get('images_per_second', '')} | "
                  f"{t.get('peak_rss_mb', '')} | {t.get('worker_peak_rss_mb') or ''} |")
    md += ["", f"Hardware: {json.dumps(hw)}", "", f"Command: `{command}`",
           f"Commit: {provenance.get('commit')} (dirty: {provenance.get('dirty')})", ""]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    cell = sub.add_parser("cell")
    cell.add_argument("--pipeline", choices=["dacl", "tllib"], required=True)
    cell.add_argument("--root", type=Path, required=True)
    table = sub.add_parser("table")
    table.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    table.add_argument("--data", type=Path, required=True, help="folder for the synthetic trees (reused when present)")
    table.add_argument("--out", type=Path, required=True, help="table path without extension")
    table.add_argument("--worker-counts", type=int, nargs="+", default=[0, 1, 2])
    table.add_argument("--data-steps", type=int, default=30)
    for p in (cell, table):
        p.add_argument("--tllib", type=Path, required=True, help="a checkout of thuml/Transfer-Learning-Library")
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--model", default="resnet18")
    cell.add_argument("--workers", type=int, default=0)
    ns = ap.parse_args(argv)
    if ns.action == "cell":
        print(json.dumps(run_cell(ns.pipeline, ns.root, ns.workers, ns.steps, ns.warmup, ns.batch, ns.model, ns.tllib)))
        return
    from dacl.engine.results import atomic_write_json, atomic_write_text, git_commit, hardware

    rows = measure(ns.sizes, ns.worker_counts, ns.data, ns.tllib, ns.steps, ns.warmup, ns.batch, ns.model, ns.data_steps)
    tllib_commit = subprocess.run(["git", "-C", str(ns.tllib), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip() or "(not a git checkout)"
    command = "python scripts/bench_streaming.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    provenance, hw = git_commit(), hardware(torch.device("cpu"))
    atomic_write_text(ns.out.with_suffix(".md"), render(rows, command, provenance, hw, tllib_commit, ns.batch, ns.model))
    header = ["images", "pipeline", "workers", "model", "images_per_second", "peak_rss_mb", "worker_peak_rss_mb"]
    atomic_write_text(ns.out.with_suffix(".csv"), "\n".join([",".join([*header, "command"])] + [
        ",".join([*(str(r[k]) for k in header), shlex.quote(command)]) for r in rows]) + "\n")
    atomic_write_json(ns.out.with_suffix(".json"), {"rows": rows, "command": command, "hardware": hw,
                                                    "tllib_commit": tllib_commit, **provenance})


if __name__ == "__main__":
    main()
