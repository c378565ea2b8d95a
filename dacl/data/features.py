"""Precomputed-feature domains (e.g. Office-Caltech-10 SURF): ``x_<domain>`` (n, d) + ``y_<domain>`` arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np

from dacl.data.arrays import load_npz
from dacl.errors import DataError

OFFICE_CALTECH_DOMAINS = ("amazon", "caltech10", "dslr", "webcam")
OFFICE_CALTECH_SURF = "office_caltech10_surf800.npz"


def load_feature_domains(path: str | Path, domains: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{domain: (features float64 (n, d), labels int64)} with shape and label checks that name the file."""
    keys = tuple(k for d in domains for k in (f"x_{d}", f"y_{d}"))
    arrays = load_npz(path, keys)
    out = {}
    for d in domains:
        x, y = arrays[f"x_{d}"], arrays[f"y_{d}"].astype(np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise DataError(f"{path}: x_{d} must be (n, d) with one label per row; got {x.shape} and {y.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"{path}: x_{d} contains NaN/inf; the file is corrupt")
        out[d] = (x.astype(np.float64), y)
    return out


def office_caltech_surf(data_root: str | Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if data_root is None:
        raise DataError(f"Office-Caltech-10 SURF needs data_root=<folder containing {OFFICE_CALTECH_SURF}> "
                        "(e.g. data_root=../shared/data)")
    return load_feature_domains(Path(data_root) / OFFICE_CALTECH_SURF, OFFICE_CALTECH_DOMAINS)


@dataclass
class FeaturePair:
    """Precomputed source and target features (a feature benchmark): what a closed-form method adapts and scores."""

    name: str
    task: str
    xs: np.ndarray
    ys: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)  # what the features came from (cache entries), recorded

    def sizes(self) -> dict[str, int]:
        return {"source_train": len(self.ys), "target_train": len(self.xt), "target_test": len(self.yt),
                "features": int(self.xs.shape[1])}
