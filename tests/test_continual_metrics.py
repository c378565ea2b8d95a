"""Continual-learning metrics on hand-made accuracy matrices with known values."""
import pytest

from dacl.metrics.continual import average_accuracy, average_forgetting, backward_transfer, forward_transfer, summarise

R = [[0.9, 0.1, 0.0],
     [0.6, 0.8, 0.2],
     [0.3, 0.7, 0.9]]


def test_known_values():
    assert average_accuracy(R) == pytest.approx((0.3 + 0.7 + 0.9) / 3)
    assert backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    assert average_forgetting(R) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)
    assert forward_transfer(R, baseline=[0.1, 0.1, 0.1]) == pytest.approx(((0.1 - 0.1) + (0.2 - 0.1)) / 2)


def test_no_forgetting_and_single_task():
    perfect = [[1.0, 0.0], [1.0, 1.0]]
    assert backward_transfer(perfect) == 0.0 and average_forgetting(perfect) == 0.0
    assert summarise([[0.7]]) == {"average_accuracy": 0.7, "bwt": 0.0, "forgetting": 0.0}


def test_forgetting_uses_the_best_earlier_accuracy():
    r = [[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.8, 0.7]]  # task 0 peaked after task 1
    assert average_forgetting(r) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)
    assert backward_transfer(r) == pytest.approx(((0.4 - 0.5) + 0.0) / 2)


def test_non_square_matrix_is_rejected():
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.1, 0.2]])
