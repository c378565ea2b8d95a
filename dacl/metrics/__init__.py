"""Classification metrics computed on full tensors (no Python loops over samples)."""
from __future__ import annotations

import torch
from torch import Tensor


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean().item()) if len(labels) else float("nan")


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): confidence-vs-accuracy gap averaged over equal-width confidence bins."""
    probs = torch.softmax(logits.float(), dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).float()
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    return float(((conf_sum - acc_sum).abs() / max(1, len(labels))).sum().item())


@torch.no_grad()
def predict_in_batches(predict, x: Tensor, batch_size: int = 2048, autocast_dtype: torch.dtype | None = None) -> Tensor:
    outs = []
    for i in range(0, len(x), batch_size):
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outs.append(predict(x[i:i + batch_size]).float())
    return torch.cat(outs) if outs else torch.empty(0)
