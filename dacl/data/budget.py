"""Labelled budgets inside one domain: k labelled images per class, the question "which adaptation for N labels?".

The test set is fixed per (domain, split seed) and shared by every budget: a stratified ``test_fraction`` of each class
(at least one image), so accuracies at k = 1 and k = all are measured on the same images. The labelled set is the
first k of each class's remaining images in a seeded order (``k=None``: all of them), so a larger budget contains every
smaller one of the same seed. A class with fewer than k remaining images gives all it has; ``capped`` says which.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dacl.errors import ConfigError


@dataclass(frozen=True)
class BudgetSplit:
    train: np.ndarray   # indices of the labelled images, sorted
    test: np.ndarray    # indices of the test images, sorted; disjoint from train
    capped: tuple[int, ...]  # classes that had fewer than k images left for training


def budget_split(labels: np.ndarray, per_class: int | None, seed: int, test_fraction: float = 0.3,
                 test_seed: int = 0) -> BudgetSplit:
    """Stratified: ``per_class`` labelled images of every class (None: all but the test images), seeded by ``seed``;
    the test images depend only on ``test_seed`` and ``test_fraction``."""
    if per_class is not None and per_class < 1:
        raise ConfigError(f"labels_per_class must be >= 1 (or null for every non-test image), got {per_class}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    test_rng, train_rng = np.random.default_rng(test_seed), np.random.default_rng([seed, 7919])
    train, test, capped = [], [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise ConfigError(f"class {int(c)} has {len(members)} image(s); a budgeted split needs at least 2 per class")
        shuffled = test_rng.permutation(members)
        n_test = min(len(members) - 1, max(1, int(round(test_fraction * len(members)))))
        test.append(shuffled[:n_test])
        pool = train_rng.permutation(shuffled[n_test:])
        if per_class is not None and per_class > len(pool):
            capped.append(int(c))
        train.append(pool if per_class is None else pool[:per_class])
    return BudgetSplit(np.sort(np.concatenate(train)), np.sort(np.concatenate(test)), tuple(capped))
