"""Domain distance, feature embeddings and calibration plots for a trained model (issue: analysis).

- ``proxy_a_distance``: Ben-David et al. 2007 / Ganin et al. 2016: train a linear domain classifier on half of the
  source+target features, measure its error ``e`` on the other half, report ``2 (1 - 2 e)`` (0 = indistinguishable,
  2 = perfectly separable). Lower after adaptation means the features were aligned.
- ``tsne_png``: sklearn t-SNE of source and target features, before and after adaptation side by side.
- ``reliability_png``: accuracy vs confidence per bin with the ECE in the title.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dacl.metrics import calibration_bins, expected_calibration_error


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


def tsne_png(panels: dict[str, tuple[Tensor, Tensor, Tensor]], path: str | Path, seed: int = 0,
             per_domain: int = 1000) -> None:
    """``panels``: title -> (source features, target features, target labels); one t-SNE per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, (fs, ft, yt)) in zip(axes[0], panels.items()):
        g = torch.Generator().manual_seed(seed)
        fs = fs[torch.randperm(len(fs), generator=g)[:per_domain]]
        pick = torch.randperm(len(ft), generator=g)[:per_domain]
        ft, yt = ft[pick], yt.cpu()[pick]
        emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(
            torch.cat([fs, ft]).float().cpu().numpy())
        ax.scatter(emb[:len(fs), 0], emb[:len(fs), 1], s=3, c="tab:blue", alpha=0.5, label="source")
        ax.scatter(emb[len(fs):, 0], emb[len(fs):, 1], s=3, c=yt.numpy(), cmap="tab10", marker="x", alpha=0.7,
                   label="target (colour = true class)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=3)
    fig.tight_layout()
    _save(fig, Path(path))


def reliability_png(curves: dict[str, tuple[Tensor, Tensor]], path: str | Path, n_bins: int = 15) -> dict[str, float]:
    """``curves``: name -> (target logits, target labels). Returns each curve's ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    eces = {}
    for name, (logits, labels) in curves.items():
        conf, correct, count = calibration_bins(logits, labels, n_bins)
        used = count > 0
        eces[name] = expected_calibration_error(logits, labels, n_bins)
        ax.plot((conf[used] / count[used]).numpy(), (correct[used] / count[used]).numpy(), "o-", ms=3,
                label=f"{name} (ECE {100 * eces[name]:.1f}%)")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, Path(path))
    return eces
