"""A deterministic digits corruption suite in the spirit of MNIST-C (Mu & Gilmer 2019) and CIFAR-10-C
(Hendrycks & Dietterich 2019), written with torch/torchvision (``imagecorruptions`` no longer installs).

Every corruption maps uint8 images (N, H, W) or (N, H, W, C) to uint8 images of the same shape at a
severity 1..5. Randomness comes only from a generator seeded by (seed, corruption, severity), so the
same call always returns the same images. All but JPEG (Pillow) run batched (one op for the whole set).
"""
from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from dacl.errors import ConfigError, UnknownNameError
from dacl.registry import DATASETS

CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {}


def corruption(name: str):
    def deco(fn):
        CORRUPTIONS[name] = fn
        return fn
    return deco


def _noise(shape, gen, kind="normal"):
    return torch.randn(shape, generator=gen) if kind == "normal" else torch.rand(shape, generator=gen)


@corruption("gaussian_noise")
def gaussian_noise(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    return x + _noise(x.shape, gen) * [0.08, 0.12, 0.18, 0.26, 0.38][s - 1]


@corruption("shot_noise")
def shot_noise(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    lam = [60, 25, 12, 5, 3][s - 1]
    return torch.poisson(x * lam, generator=gen) / lam


@corruption("impulse_noise")
def impulse_noise(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    amount = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1]
    u = _noise(x.shape, gen, "uniform")
    salt = _noise(x.shape, gen, "uniform") < 0.5
    return torch.where(u < amount, salt.float(), x)


@corruption("gaussian_blur")
def gaussian_blur(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    sigma = [0.6, 0.9, 1.2, 1.6, 2.0][s - 1]
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


@corruption("motion_blur")
def motion_blur(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    """A line kernel at one random angle per image (applied by grouping images into 8 angle bins)."""
    length = [3, 5, 5, 7, 9][s - 1]
    bins = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = torch.empty_like(x)
    c = x.shape[1]
    for b in range(8):
        idx = (bins == b).nonzero().flatten()
        if len(idx) == 0:
            continue
        angle = math.pi * b / 8
        kernel = torch.zeros(length, length)
        t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length)
        ys = (length // 2 + t * math.sin(angle)).round().long().clamp(0, length - 1)
        xs = (length // 2 + t * math.cos(angle)).round().long().clamp(0, length - 1)
        kernel[ys, xs] = 1.0
        kernel = (kernel / kernel.sum()).expand(c, 1, length, length)
        out[idx] = F.conv2d(x[idx], kernel, padding=length // 2, groups=c)
    return out


@corruption("glass_blur")
def glass_blur(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    """Blur, then move every pixel to a random neighbour within ``radius`` (frosted glass), then blur."""
    sigma, radius = [(0.4, 1), (0.5, 1), (0.6, 1), (0.7, 2), (0.9, 2)][s - 1]
    x = gaussian_blur(x, 1, gen) if sigma else x
    n, c, h, w = x.shape
    dy = torch.randint(-radius, radius + 1, (n, h, w), generator=gen)
    dx = torch.randint(-radius, radius + 1, (n, h, w), generator=gen)
    yy = (torch.arange(h).view(1, h, 1) + dy).clamp(0, h - 1)
    xx = (torch.arange(w).view(1, 1, w) + dx).clamp(0, w - 1)
    flat = (yy * w + xx).view(n, 1, h * w).expand(n, c, h * w)
    x = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return TF.gaussian_blur(x, [3, 3], [sigma, sigma])


@corruption("brightness")
def brightness(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    return x + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]


@corruption("contrast")
def contrast(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    c = [0.4, 0.3, 0.2, 0.1, 0.05][s - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


@corruption("fog")
def fog(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    """Smooth random haze: multi-scale upsampled noise added, contrast lowered."""
    strength, keep = [(0.3, 0.9), (0.45, 0.8), (0.6, 0.7), (0.75, 0.6), (0.9, 0.5)][s - 1]
    n, c, h, w = x.shape
    haze = sum(F.interpolate(torch.rand((n, 1, r, r), generator=gen), size=(h, w), mode="bicubic", align_corners=False) / 2 ** i
               for i, r in enumerate((2, 4, 8)))
    haze = haze / haze.amax(dim=(2, 3), keepdim=True)
    return x * keep + strength * haze


@corruption("elastic")
def elastic(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    """Smoothed random displacement field (Simard et al. 2003), applied with one grid_sample."""
    alpha, sigma = [(1.0, 3.0), (1.5, 3.0), (2.0, 2.5), (2.5, 2.5), (3.0, 2.0)][s - 1]
    n, c, h, w = x.shape
    field = _noise((n, 2, h, w), gen, "uniform") * 2 - 1
    k = 2 * math.ceil(3 * sigma) + 1
    field = TF.gaussian_blur(field, [k, k], [sigma, sigma])
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) * alpha * 2 / h  # pixels -> [-1, 1]
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, c, h, w], align_corners=False)
    return F.grid_sample(x, base + field.permute(0, 2, 3, 1), align_corners=False, padding_mode="border")


@corruption("pixelate")
def pixelate(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    h = x.shape[-1]
    small = max(2, int(h * [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]))
    return F.interpolate(F.interpolate(x, size=(small, small), mode="area"), size=x.shape[-2:], mode="nearest")


@corruption("jpeg")
def jpeg(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    """Real JPEG round trips through Pillow (the one per-image loop; generation runs once per test set)."""
    import io

    from PIL import Image

    quality = [25, 18, 12, 8, 5][s - 1]
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf)).reshape(img.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@corruption("rotate")
def rotate(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    deg = [10, 20, 30, 40, 50][s - 1]
    sign = torch.randint(0, 2, (x.shape[0],), generator=gen).float() * 2 - 1
    a = sign * deg * math.pi / 180
    theta = torch.stack([torch.stack([a.cos(), -a.sin(), torch.zeros_like(a)], 1),
                         torch.stack([a.sin(), a.cos(), torch.zeros_like(a)], 1)], 1)
    return _affine(x, theta)


@corruption("shear")
def shear(x: Tensor, s: int, gen: torch.Generator) -> Tensor:
    k = [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]
    sign = torch.randint(0, 2, (x.shape[0],), generator=gen).float() * 2 - 1
    one, zero = torch.ones_like(sign), torch.zeros_like(sign)
    theta = torch.stack([torch.stack([one, sign * k, zero], 1), torch.stack([zero, one, zero], 1)], 1)
    return _affine(x, theta)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8, (N,H,W) or (N,H,W,C)) corrupted by ``name`` at ``severity`` in 1..5; deterministic."""
    if name not in CORRUPTIONS:
        from dacl.registry import did_you_mean

        raise UnknownNameError(f"unknown corruption '{name}'{did_you_mean(name, CORRUPTIONS)}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity}")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
    grey = images.ndim == 3
    x = torch.from_numpy(images[..., None] if grey else images).permute(0, 3, 1, 2).float() / 255
    y = CORRUPTIONS[name](x, severity, gen).clamp(0, 1)
    out = (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if grey else out


def grid_png(images: np.ndarray, path: str, seed: int = 0, per_row: int = 4) -> None:
    """A PNG with one row per corruption and one column per severity (``per_row`` sample images each),
    so a person can check every corruption looks right."""
    from PIL import Image, ImageDraw

    sample = images[:per_row]
    h, w = sample.shape[1:3]
    label_w, pad = 110, 4
    tile_w = per_row * w + pad
    canvas = Image.new("L", (label_w + 6 * tile_w, len(CORRUPTIONS) * (h + pad) + 16), 255)
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(["clean"] + [f"severity {s}" for s in range(1, 6)]):
        draw.text((label_w + col * tile_w, 2), title, fill=0)
    for row, name in enumerate(CORRUPTIONS):
        top = 16 + row * (h + pad)
        draw.text((2, top + h // 3), name, fill=0)
        for col in range(6):
            imgs = sample if col == 0 else corrupt(sample, name, col, seed)
            strip = np.concatenate(list(imgs[..., 0] if imgs.ndim == 4 else imgs), axis=1)
            canvas.paste(Image.fromarray(strip), (label_w + col * tile_w, top))
    canvas.save(path)


@DATASETS.register("corrupted")
def corrupted(base: str = "mnist", corruptions: list[str] | None = None, severities: list[int] | None = None,
              n: int = 10000, seed: int = 0, data_root: str | None = None, download: bool = False):
    """A corruption suite as one dataset: the first ``n`` test images of ``base`` under every corruption at every
    severity, severity-major (all corruptions at severity 1, then 2, ...); train = test (transductive)."""
    from dacl.data.arrays import DomainArrays

    names, levels = list(corruptions or CORRUPTIONS), list(severities or range(1, 6))
    if n < 1:
        raise ConfigError(f"the corruption suite needs n >= 1 test images per domain, got {n}")
    clean = DATASETS.get(base)(data_root=data_root, download=download)
    x, y = clean.x_test[:n], clean.y_test[:n]
    xs = np.concatenate([corrupt(x, c, s, seed) for s in levels for c in names])
    ys = np.tile(y, len(names) * len(levels))
    return DomainArrays(f"{clean.name}_c", xs, ys, xs, ys, origin=f"{clean.origin or clean.name} (corrupted)")
