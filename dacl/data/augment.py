"""Batched, on-device image augmentations (no per-sample Python): one affine grid for the whole batch.

``weak`` is FixMatch's flip-free translation; ``strong`` adds rotation, shear, scale, contrast and
brightness jitter and a cutout square, i.e. a RandAugment-like distortion that keeps the label.
Inputs are normalised images (N, C, H, W), or feature vectors (N, D), whose views are feature dropout; every random
draw comes from the given generator or torch's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device, dtype=torch.float32) * (high - low) + low


def random_affine(x: Tensor, translate: float = 0.125, degrees: float = 0.0, shear: float = 0.0,
                  scale: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """Random per-image affine transform; ``translate`` is a fraction of the image size."""
    n = x.shape[0]
    angle = _uniform(n, -degrees, degrees, x) * math.pi / 180
    sh = _uniform(n, -shear, shear, x)
    s = _uniform(n, scale[0], scale[1], x)
    tx, ty = _uniform(n, -2 * translate, 2 * translate, x), _uniform(n, -2 * translate, 2 * translate, x)  # grid is [-1, 1]
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pad with the image's own minimum (the background after normalisation), not with 0.
    fill = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample((x - fill).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).to(x.dtype)


def color_jitter(x: Tensor, brightness: float = 0.3, contrast: float = 0.3) -> Tensor:
    """Per-image contrast (around the image mean) and brightness (in units of the image's std)."""
    n = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    c = _uniform(n, 1 - contrast, 1 + contrast, x).view(n, 1, 1, 1)
    b = _uniform(n, -brightness, brightness, x).view(n, 1, 1, 1)
    return (x - mean) * c + mean + b * std


def cutout(x: Tensor, size: float = 0.5) -> Tensor:
    """Fill one random square of side ``size`` x image side per image with the image's mean."""
    n, _, h, w = x.shape
    side = max(1, int(round(size * min(h, w))))
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    box = ((ys - cy).abs() <= side // 2) & ((xs - cx).abs() <= side // 2)
    return torch.where(box.unsqueeze(1), x.mean(dim=(1, 2, 3), keepdim=True), x)


# Feature vectors (cached features of a frozen backbone, (N, D)) have no pixels to move: their weak and strong views
# are feature dropout (inverted, so the expected vector is unchanged) at these rates.
FEATURE_DROPOUT = {"weak": 0.1, "strong": 0.5}


def weak(x: Tensor) -> Tensor:
    if x.ndim == 2:
        return F.dropout(x, FEATURE_DROPOUT["weak"], training=True)
    return random_affine(x, translate=0.125)


def strong(x: Tensor) -> Tensor:
    if x.ndim == 2:
        return F.dropout(x, FEATURE_DROPOUT["strong"], training=True)
    x = random_affine(x, translate=0.125, degrees=25.0, shear=0.25, scale=(0.85, 1.15))
    return cutout(color_jitter(x), size=0.4)


AUGMENTATIONS = {"none": lambda x: x, "weak": weak, "strong": strong}
