"""Checkpoints that can be loaded without running code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers, so a crafted file cannot
execute anything on resume. Everything dacl writes into a checkpoint is therefore kept to those types:
the Python and NumPy RNG states, which are tuples holding an ndarray, are stored as tensors and ints.
A file that is not a dacl checkpoint, or that torch refuses to load safely, is reported as a
``CheckpointError`` (one ``dacl: error:`` line from the CLI) and never unpickled.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dacl.errors import CheckpointError

CHECKPOINT_FORMAT = "dacl-checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every RNG a step can draw from, as tensors and ints (loadable with ``weights_only=True``)."""
    version, mt_words, gauss = random.getstate()
    name, np_words, np_pos, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": {"version": int(version), "words": torch.tensor(mt_words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(name), "words": torch.from_numpy(np_words.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["words"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def with_format(payload: dict[str, Any]) -> dict[str, Any]:
    """Stamp a checkpoint so a loader can tell dacl's files from any other ``.pt``."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}


def load_checkpoint_file(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dacl wrote, safely; anything else raises ``CheckpointError`` naming the fix."""
    path = Path(path)
    fix = "delete it (or start a new run directory) to train from scratch"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely (unpickling it would need more than tensors "
                              f"and plain values, e.g. code to run); it is not a file dacl wrote: {fix}") from exc
    except Exception as exc:  # noqa: BLE001  (the zip reader and the OS raise their own types)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely ({reason[:200]}); it is not a file dacl "
                              f"wrote, or it is damaged: {fix}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a dacl checkpoint (no '{CHECKPOINT_FORMAT}' stamp): {fix}")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt.get('version')}, this dacl reads "
                              f"version {CHECKPOINT_VERSION}: {fix}")
    return ckpt
