"""Model weights meant to be shared (a run's final model, a pre-trained backbone): safetensors, never pickle.

A run writes ``model.safetensors``: a flat name -> tensor file that loads without executing anything, in any
framework. Files written before (``model.pt``, a plain state_dict) still load, through ``torch.load`` with
``weights_only=True``. The training checkpoint (optimizer, RNG, plugin state) stays in ``checkpoint.py``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dacl.engine.results import _atomic_write
from dacl.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "model.pt"


def save_weights(state_dict: dict[str, Tensor], path: str | Path) -> None:
    """Write a state_dict as safetensors, atomically. Tensors are copied out contiguous and unshared, as the format
    requires (tied weights are stored twice and load back tied by ``load_state_dict``)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata={"format": "pt", "written_by": "dacl"})
    _atomic_write(path, "wb", lambda f: f.write(data))


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state_dict from ``.safetensors`` (or a legacy ``.pt`` state_dict, loaded with ``weights_only=True``)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a damaged or foreign file: one line, never a traceback)
        raise CheckpointError(f"{path} is not a weights file dacl can read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); point at a run's {WEIGHTS_FILE}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict (name -> tensor); point at a run's {WEIGHTS_FILE}")
    return state


def run_weights(run_dir: str | Path) -> Path:
    """The final weights a run folder holds: ``model.safetensors``, or ``model.pt`` from runs made before it."""
    run_dir = Path(run_dir)
    legacy = run_dir / LEGACY_WEIGHTS_FILE
    return legacy if legacy.is_file() and not (run_dir / WEIGHTS_FILE).is_file() else run_dir / WEIGHTS_FILE
