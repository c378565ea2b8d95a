"""Labelled budgets inside one domain: stratified, seeded, nested across k, disjoint from a test set fixed for all k."""
import numpy as np
import pytest

from dacl.data.budget import budget_split
from dacl.errors import ConfigError

LABELS = np.repeat(np.arange(4), [30, 12, 8, 3])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_budget_is_stratified_and_disjoint_from_the_test_set(k):
    split = budget_split(LABELS, k, seed=0)
    assert not set(split.train) & set(split.test)
    counts = np.bincount(LABELS[split.train], minlength=4)
    pool = np.bincount(LABELS, minlength=4) - np.bincount(LABELS[split.test], minlength=4)
    assert (counts == np.minimum(k, pool)).all(), counts
    assert set(split.capped) == {c for c in range(4) if pool[c] < k}


def test_the_test_set_is_the_same_for_every_budget_and_seed_and_budgets_nest():
    splits = {(k, s): budget_split(LABELS, k, seed=s) for k in (1, 3, 5, None) for s in (0, 1)}
    tests = {tuple(sp.test) for sp in splits.values()}
    assert len(tests) == 1
    for s in (0, 1):
        assert set(splits[(1, s)].train) <= set(splits[(3, s)].train) <= set(splits[(5, s)].train) <= set(splits[(None, s)].train)
    assert set(splits[(None, 0)].train) | set(splits[(None, 0)].test) == set(range(len(LABELS)))
    assert list(splits[(3, 0)].train) != list(splits[(3, 1)].train), "another seed draws other labelled images"
    assert list(budget_split(LABELS, 3, seed=1).train) == list(splits[(3, 1)].train)
    test_counts = np.bincount(LABELS[splits[(1, 0)].test], minlength=4)
    assert (test_counts >= 1).all() and test_counts[0] == 9


def test_bad_budgets_are_config_errors():
    with pytest.raises(ConfigError, match=">= 1"):
        budget_split(LABELS, 0, seed=0)
    with pytest.raises(ConfigError, match="at least 2"):
        budget_split(np.array([0, 0, 1]), 1, seed=0)
