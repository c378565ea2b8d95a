"""Continual-learning metrics from one accuracy matrix R, with R[i, j] = accuracy on task j after training task i
(Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018). Every summary below is derived from R, so a results file
that stores R can always be re-summarised.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _matrix(r: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    m = np.asarray(r, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"accuracy matrix must be square (tasks x tasks), got shape {m.shape}")
    return m


def average_accuracy(r) -> float:
    """Mean accuracy over all tasks after the last one."""
    return float(_matrix(r)[-1].mean())


def backward_transfer(r) -> float:
    """BWT = mean_j<T (R[T, j] - R[j, j]); negative means forgetting."""
    m = _matrix(r)
    t = len(m) - 1
    return float(np.mean([m[t, j] - m[j, j] for j in range(t)])) if t else 0.0


def forward_transfer(r, baseline: Sequence[float]) -> float:
    """FWT = mean_j>0 (R[j-1, j] - b_j), with b_j the accuracy of a randomly initialised model on task j."""
    m, b = _matrix(r), np.asarray(baseline, dtype=np.float64)
    return float(np.mean([m[j - 1, j] - b[j] for j in range(1, len(m))])) if len(m) > 1 else 0.0


def average_forgetting(r) -> float:
    """Mean over tasks j < T of (best accuracy ever on j before the end) - (final accuracy on j)."""
    m = _matrix(r)
    t = len(m) - 1
    return float(np.mean([m[:t, j].max() - m[t, j] for j in range(t)])) if t else 0.0


def summarise(r, baseline: Sequence[float] | None = None) -> dict[str, float]:
    out = {"average_accuracy": average_accuracy(r), "bwt": backward_transfer(r), "forgetting": average_forgetting(r)}
    if baseline is not None:
        out["fwt"] = forward_transfer(r, baseline)
    return out
