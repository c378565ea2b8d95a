"""Classification metrics computed on full tensors (no Python loops over samples)."""
from __future__ import annotations

import torch
from torch import Tensor


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean().item()) if len(labels) else float("nan")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-example Shannon entropy (nats) of softmax(logits), via log_softmax for stability."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def entropy_of_probs(probs: Tensor, eps: float = 1e-8) -> Tensor:
    """Entropy of probability rows (last dim); a 1-D input gives one value (e.g. the batch-mean prediction)."""
    return -(probs * torch.log(probs + eps)).sum(dim=-1)


def calibration_bins(logits: Tensor, labels: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width confidence bin: (summed confidence, number correct, count) — ECE and reliability diagrams."""
    probs = torch.softmax(logits.float(), dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    return (torch.bincount(bins, weights=conf, minlength=n_bins), torch.bincount(bins, weights=correct, minlength=n_bins),
            torch.bincount(bins, minlength=n_bins))


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): confidence-vs-accuracy gap averaged over equal-width confidence bins."""
    conf_sum, acc_sum, _ = calibration_bins(logits, labels, n_bins)
    return float(((conf_sum - acc_sum).abs() / max(1, len(labels))).sum().item())


@torch.no_grad()
def predict_in_batches(predict, x: Tensor, batch_size: int = 2048, autocast_dtype: torch.dtype | None = None) -> Tensor:
    outs = []
    # streamed images (dacl.data.streaming.ImageFiles) decode in order in workers; tensors are sliced
    chunks = x.batches(batch_size) if hasattr(x, "batches") else (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    for chunk in chunks:
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outs.append(predict(chunk).float())
    return torch.cat(outs) if outs else torch.empty(0)
