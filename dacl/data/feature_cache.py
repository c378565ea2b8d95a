"""Features of a frozen backbone, computed once per identity and shared by every method, seed and run.

Where the backbone never trains (a linear probe, DA on a trainable bottleneck + head, shallow SA / CORAL / OT-DA, a
head adapted at test time), forwarding it every step repeats the same computation. An entry is one image set through
one backbone and one transform: its *identity* is the backbone (name and weights SHA-256), the transform (size, resize,
crop, interpolation, normalisation), the image list (a SHA-256 over every file's bytes and label, in order) and the
declared augmentation views (how many, their seed). A changed identity is a new entry; an entry whose stored identity
or content hash does not match is refused and recomputed. Entries are safetensors files (no pickle), written
atomically, in ``cache_dir`` (``$DACL_FEATURE_CACHE``, else ``~/.cache/dacl/features``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dacl.data.streaming import ImageFiles, read_image_bytes, standard_transform

log = logging.getLogger(__name__)
FORMAT = 1  # bump when what an entry holds, or how it is computed, changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("DACL_FEATURE_CACHE", Path.home() / ".cache" / "dacl" / "features")).expanduser()


def image_list_sha256(files: Sequence[str], labels: np.ndarray) -> str:
    """Content identity of an image set: every file's bytes and label, in order (a renamed copy is the same set)."""
    digest = hashlib.sha256()
    for path, label in zip(files, labels.tolist()):
        data = read_image_bytes(path)
        digest.update(len(data).to_bytes(8, "little") + data + int(label).to_bytes(8, "little", signed=True))
    return digest.hexdigest()


def module_sha256(module: nn.Module) -> str:
    """Weights identity of a backbone without a published file (random init, or weights dacl trained)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Transform:
    image_size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    views: int = 0          # extra random-resized-crop + flip views per image (train pipeline), seeded
    view_seed: int = 0


def _tensors_sha256(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def _forward(backbone: nn.Module, images: ImageFiles, items: list[Any], batch_size: int) -> Tensor:
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    out = [backbone(images.normalise(b)).float().cpu() for b in images.loader(batches)]
    return torch.cat(out) if out else torch.empty(0)


def compute(backbone: nn.Module, files: Sequence[str], transform: Transform, workers: int = 2,
            batch_size: int = 64, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The entry's tensors: ``features`` (N, D) under the test pipeline, ``views`` (V, N, D) under the train one."""
    backbone = backbone.eval().to(device)
    t = transform
    test = ImageFiles(files, standard_transform(False, t.image_size, t.resize, interpolation=t.interpolation),
                      t.image_size, t.mean, t.std, device, workers)
    out = {"features": _forward(backbone, test, list(range(len(files))), batch_size)}
    if t.views:
        train = ImageFiles(files, standard_transform(True, t.image_size, t.resize, interpolation=t.interpolation),
                           t.image_size, t.mean, t.std, device, workers)
        seeds = lambda v: [(i, (t.view_seed * 1_000_003 + v) * 1_000_003 + i) for i in range(len(files))]  # noqa: E731
        out["views"] = torch.stack([_forward(backbone, train, seeds(v), batch_size) for v in range(t.views)])
    return out


def entry_identity(model_name: str, weights_sha256: str, images_sha256: str, transform: Transform) -> dict[str, Any]:
    return {"format": FORMAT, "model": model_name, "weights_sha256": weights_sha256, "images_sha256": images_sha256,
            "transform": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(transform).items()}}


def entry_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_entry(path: Path, identity: dict[str, Any]) -> dict[str, Tensor] | None:
    """The entry's tensors, or None when the file is absent, unreadable, of another identity or damaged."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:  # one read: the header's identity and the tensors
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        log.warning("feature cache entry %s is unreadable (%s); recomputing it", path, exc)
        return None
    if meta.get("identity") != json.dumps(identity, sort_keys=True):
        log.warning("feature cache entry %s holds another identity; recomputing it", path)
        return None
    if meta.get("sha256") != _tensors_sha256(tensors):
        log.warning("feature cache entry %s is damaged (content hash mismatch); recomputing it", path)
        return None
    return tensors


def save_entry(path: Path, identity: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Atomic: a reader sees the old entry, none, or the complete new one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"identity": json.dumps(identity, sort_keys=True), "sha256": _tensors_sha256(tensors)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # a shared cache: readable by every user, as any data file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_features(backbone: nn.Module, model_name: str, files: Sequence[str], labels: np.ndarray,
                    transform: Transform, cache_dir: str | Path | None = None, workers: int = 2,
                    device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, provenance) for one image set: from its cache entry, computed and stored when missing or damaged.
    ``provenance`` names the entry (file, key, identity, whether this call computed it) for the run record."""
    weights = getattr(backbone, "weights_sha256", None) or module_sha256(backbone)
    identity = entry_identity(model_name, weights, image_list_sha256(files, labels), transform)
    key = entry_key(identity)
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = path / f"{model_name}-{key[:16]}.safetensors"
    tensors = load_entry(path, identity)
    computed = tensors is None
    if computed:
        tensors = compute(backbone, files, transform, workers=workers, device=device)
        save_entry(path, identity, tensors)
    return tensors, {"file": str(path), "key": key, "computed": computed, **identity}
