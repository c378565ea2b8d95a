"""Office-Caltech-10 from its original JPEGs at native resolution: images (fine-tuning) or a frozen backbone's
cached features (every method that trains only what sits above the backbone).

All 12 ordered pairs of amazon / caltech10 / dslr / webcam, 10 classes in a fixed order, transductive as the 96 px
``office_caltech``: the whole source domain trains (less a held-out ``val_fraction`` for source_val selection), the
whole target domain is the unlabelled training set and the test set. Images are read in place from
``office_caltech10_images.tar`` (or an extracted tree) through the streaming path: train resize 256 +
random-resized crop 224 + flip, test resize 256 + centre crop 224 (``image_size`` / ``resize`` for 160 / 112 runs).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from dacl.benchmarks.domain_pair import DomainPair
from dacl.benchmarks.image_lists import image_files_pair
from dacl.data.office import OFFICE_CALTECH_DOMAINS, office_caltech_files
from dacl.errors import ConfigError
from dacl.registry import BENCHMARKS

FEATURE_KINDS = ("network", "shallow")


def _domains(source: str, target: str) -> None:
    for side, domain in (("source", source), ("target", target)):
        if domain not in OFFICE_CALTECH_DOMAINS:
            raise ConfigError(f"benchmark.{side}={domain!r} is not an Office-Caltech-10 domain; choose one of "
                              f"{', '.join(OFFICE_CALTECH_DOMAINS)}")


@BENCHMARKS.register("office_caltech_images")
def office_caltech_images(source: str = "amazon", target: str = "webcam", data_root: str | None = None,
                          download: bool = False, path: str | None = None, budget: int | str | None = None,
                          budget_seed: int = 0, **options: Any) -> DomainPair:
    """Office-Caltech-10 original JPEGs, any of the 12 ordered pairs, streamed at ``image_size`` (224 px default).
    ``budget=k`` (source = target): k labelled images per class train, a fixed 30% of the domain tests (dacl.data.budget)."""
    _domains(source, target)
    files = office_caltech_files((source, target) if source != target else (source,), data_root, path)
    src, tgt = files[source], files[target]
    if budget is not None:
        split = _budget(source, target, src[1], budget, budget_seed)
        pick = lambda rows: ([src[0][i] for i in rows], src[1][rows])  # noqa: E731
        train, test = pick(split.train), pick(split.test)
        pair = image_files_pair("office_caltech_images", f"{source} (budget {budget})", 10, train, train, test[0], test,
                                hold_out_val=False, **options)
        pair.provenance = {"budget": {"per_class": budget, "seed": budget_seed, "train": len(split.train),
                                      "test": len(split.test), "capped_classes": list(split.capped)}}
        return pair
    return image_files_pair("office_caltech_images", f"{source}->{target}", 10, src, src, tgt[0], tgt, **options)


def _budget(source: str, target: str, labels: np.ndarray, budget: int | str, seed: int) -> Any:
    from dacl.data.budget import budget_split

    if source != target:
        raise ConfigError(f"benchmark.budget labels part of one domain: set benchmark.target={source} (got {target})")
    if budget != "all" and not (isinstance(budget, int) and budget >= 1):
        raise ConfigError(f"benchmark.budget must be a number of labelled images per class (>= 1) or 'all', got {budget!r}")
    return budget_split(labels, None if budget == "all" else int(budget), seed)


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)


@BENCHMARKS.register("office_caltech_features")
def office_caltech_features(source: str = "amazon", target: str = "webcam", data_root: str | None = None,
                            download: bool = False, path: str | None = None, backbone: str = "tf_efficientnet_lite0",
                            pretrained: bool = True, kind: str = "network", image_size: int = 224, resize: int = 256,
                            interpolation: str = "model", mean: Sequence[float] | str = "model",
                            std: Sequence[float] | str = "model", views: int = 0, view_seed: int = 0,
                            val_fraction: float = 0.1, split_seed: int = 0, cache_dir: str | None = None,
                            workers: int = 2, budget: int | str | None = None, budget_seed: int = 0,
                            device: torch.device | str = "cpu") -> Any:
    """Office-Caltech-10 through a frozen timm backbone (ImageNet weights), each domain's features cached once.

    ``kind=network``: a DomainPair of feature vectors (``model=features`` trains a bottleneck + head on them; every DA
    method runs unchanged). ``kind=shallow``: a FeaturePair, each domain standardised on its own, for the closed-form
    methods (``method=feature_adapter``: none, SA, CORAL, OT-DA). ``views`` adds that many augmented (random-resized
    crop + flip) views of every source training image as extra training rows (network kind). ``budget=k`` (source =
    target): k labelled images per class train (and are the validation set), a fixed 30% of the domain tests."""
    from dacl.data.feature_cache import Transform, cached_features
    from dacl.data.features import FeaturePair
    from dacl.models.backbones import TimmBackbone

    if kind not in FEATURE_KINDS:
        raise ConfigError(f"benchmark.kind must be one of {', '.join(FEATURE_KINDS)}, got '{kind}'")
    if views < 0:
        raise ConfigError(f"benchmark.views must be >= 0, got {views}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"benchmark.val_fraction must be in (0, 1), got {val_fraction}")
    _domains(source, target)
    files = office_caltech_files((source, target) if source != target else (source,), data_root, path)
    net = TimmBackbone(name=backbone, pretrained=pretrained)
    cfg = net.pretrained_cfg
    transform = Transform(image_size, resize, cfg.get("interpolation", "bilinear") if interpolation == "model" else interpolation,
                          tuple(cfg.get("mean", (0.485, 0.456, 0.406)) if mean == "model" else mean),
                          tuple(cfg.get("std", (0.229, 0.224, 0.225)) if std == "model" else std),
                          views if kind == "network" else 0, view_seed)
    entries, provenance = {}, {}
    for domain in dict.fromkeys((source, target)):
        entries[domain], provenance[domain] = cached_features(net, backbone, *files[domain], transform, cache_dir,
                                                              workers=workers)
    ys, yt = files[source][1], files[target][1]
    xs, xt = entries[source]["features"], entries[target]["features"]
    if kind == "shallow":
        pair: Any = FeaturePair("office_caltech_features", f"{source}->{target}", _standardize(xs.double().numpy()),
                                ys, _standardize(xt.double().numpy()), yt, provenance={"feature_cache": provenance})
        return pair
    to = lambda t: t.to(device)  # noqa: E731
    lab = lambda y: torch.as_tensor(y, dtype=torch.long, device=device)  # noqa: E731
    record: dict[str, Any] = {"feature_cache": provenance}
    if budget is not None:  # in-domain: k labelled per class train (and validate), a fixed 30% tests
        split = _budget(source, target, ys, budget, budget_seed)
        tr_idx = val_idx = src_test_idx = split.train  # as office_caltech_images: the labelled images score the source
        task, xt, yt = f"{source} (budget {budget})", xs[split.test], ys[split.test]
        record["budget"] = {"per_class": budget, "seed": budget_seed, "train": len(tr_idx), "test": len(split.test),
                            "capped_classes": list(split.capped)}
    else:  # transductive DA: the source less a held-out part trains, the whole target is scored
        perm = np.random.default_rng(split_seed).permutation(len(ys))
        n_val = int(round(val_fraction * len(perm)))
        val_idx, tr_idx, src_test_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:]), np.arange(len(ys))
        task = f"{source}->{target}"
    train_x = [xs[tr_idx]] + [v[tr_idx] for v in entries[source].get("views", [])]
    return DomainPair(
        name="office_caltech_features", task=task, num_classes=10, in_channels=int(xs.shape[1]), image_size=1,
        source_train=(to(torch.cat(train_x)), lab(np.tile(ys[tr_idx], len(train_x)))),
        source_val=(to(xs[val_idx]), lab(ys[val_idx])), source_test=(to(xs[src_test_idx]), lab(ys[src_test_idx])),
        target_train_x=to(xt), target_test=(to(xt), lab(yt)), provenance=record,
    )
