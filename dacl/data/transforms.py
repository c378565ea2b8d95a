"""Explicit, vectorised preprocessing: uint8 arrays -> normalised float tensors of a fixed size/channels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dacl.errors import ConfigError


def to_tensor_images(x: np.ndarray, image_size: int, channels: int, mean: Sequence[float], std: Sequence[float],
                     device: torch.device | str = "cpu", chunk: int = 8192) -> torch.Tensor:
    """(N,H,W[,C]) uint8 -> (N,channels,image_size,image_size) float32 on ``device``.

    Resizing is bilinear with antialiasing; grey->RGB repeats the channel and RGB->grey averages, so a
    benchmark's config states exactly what the network sees.
    """
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"mean/std need {channels} values (one per channel), got {list(mean)} / {list(std)}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = torch.empty((len(x), channels, image_size, image_size), dtype=torch.float32, device=device)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        if not (part.flags.writeable and part.flags.c_contiguous):
            part = np.array(part, order="C")  # a read-only memmap: torch only shares writable memory
        t = torch.from_numpy(part)
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        t = t.float().div_(255.0)
        if t.shape[1] != channels:
            if t.shape[1] == 1:
                t = t.expand(-1, channels, -1, -1)
            elif channels == 1:
                t = t.mean(dim=1, keepdim=True)
            else:
                raise ConfigError(f"cannot convert {t.shape[1]} channels to {channels}")
        if t.shape[-1] != image_size or t.shape[-2] != image_size:
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
            t = t.clamp_(0.0, 1.0)
        out[start:start + chunk] = ((t - mean_t) / std_t).to(device)
    return out
