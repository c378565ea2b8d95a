"""Domain distance, feature embeddings and calibration plots for a trained model.

- ``proxy_a_distance``: Ben-David et al. 2007 / Ganin et al. 2016: train a linear domain classifier on half of the
  source+target features, measure its error ``e`` on the other half, report ``2 (1 - 2 e)`` (0 = indistinguishable,
  2 = perfectly separable). Lower after adaptation means the features were aligned.
- ``tsne_embedding`` / ``draw_tsne``: sklearn t-SNE of source and target features, runs side by side.
- ``reliability_curve`` / ``draw_reliability``: accuracy vs confidence per bin.
The numbers are computed in a measurement (dacl/analysis/feature_analysis.py) and stored in its run record; the
figures are drawn from the records.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dacl.metrics import calibration_bins


def proxy_a_distance(source: Tensor, target: Tensor, seed: int = 0, limit: int = 2000) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(seed)
    xs, xt = source.float().cpu().numpy(), target.float().cpu().numpy()
    n = min(len(xs), len(xt), limit)  # balanced domains: chance error is exactly 0.5
    xs, xt = xs[rng.permutation(len(xs))[:n]], xt[rng.permutation(len(xt))[:n]]
    x, y = np.concatenate([xs, xt]), np.r_[np.zeros(n), np.ones(n)]
    order = rng.permutation(2 * n)
    train, test = order[:n], order[n:]
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x[train]), y[train])
    err = 1.0 - clf.score(scaler.transform(x[test]), y[test])
    return float(2.0 * (1.0 - 2.0 * min(err, 0.5)))


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def tsne_embedding(source: Tensor, target: Tensor, target_labels: Tensor, seed: int = 0,
                   per_domain: int = 1000) -> dict[str, list]:
    """A 2-d t-SNE of up to ``per_domain`` source and target features (rounded: it is stored in a run record, and a
    figure needs no more than three decimals)."""
    from sklearn.manifold import TSNE

    g = torch.Generator().manual_seed(seed)
    fs = source[torch.randperm(len(source), generator=g)[:per_domain]]
    pick = torch.randperm(len(target), generator=g)[:per_domain]
    ft, yt = target[pick], target_labels.cpu()[pick]
    emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(
        torch.cat([fs, ft]).float().cpu().numpy())
    emb = np.round(emb.astype(np.float64) / max(1e-8, float(np.abs(emb).max())), 3)
    return {"source": emb[:len(fs)].tolist(), "target": emb[len(fs):].tolist(), "target_labels": yt.tolist()}


def draw_tsne(panels: dict[str, dict[str, list]], path: str | Path) -> None:
    """``panels``: title -> a ``tsne_embedding``; one scatter per panel, source blue, target coloured by true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, emb) in zip(axes[0], panels.items()):
        src, tgt = np.asarray(emb["source"]), np.asarray(emb["target"])
        ax.scatter(src[:, 0], src[:, 1], s=3, c="tab:blue", alpha=0.5, label="source")
        ax.scatter(tgt[:, 0], tgt[:, 1], s=3, c=emb["target_labels"], cmap="tab10", marker="x", alpha=0.7,
                   label="target (colour = true class)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=3)
    fig.tight_layout()
    _save(fig, Path(path))


def reliability_curve(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, list[float]]:
    """Mean confidence and accuracy of each non-empty confidence bin, and its size: a reliability diagram's points."""
    conf, correct, count = calibration_bins(logits, labels, n_bins)
    used = count > 0
    return {"confidence": (conf[used] / count[used]).tolist(), "accuracy": (correct[used] / count[used]).tolist(),
            "count": count[used].tolist()}


def draw_reliability(curves: dict[str, dict[str, list[float]]], path: str | Path) -> None:
    """``curves``: label -> a ``reliability_curve``; accuracy against confidence beside the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for name, curve in curves.items():
        ax.plot(curve["confidence"], curve["accuracy"], "o-", ms=3, label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, Path(path))
