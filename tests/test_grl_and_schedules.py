import math

import pytest
import torch

from dacl.models.grl import grl_coefficient, reverse_gradient
from dacl.registry import SCHEDULES


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_grl_is_identity_forward_and_reverses_scaled_gradient(coeff):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = reverse_gradient(x, coeff)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -coeff * w)


def test_grl_coefficient_warm_start():
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coefficient(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.462
    values = [grl_coefficient(p / 20) for p in range(21)]
    assert all(a < b for a, b in zip(values, values[1:])), "must increase monotonically"
    assert grl_coefficient(-1.0) == 0.0, "no reversal before training starts"
    # TLlib's warm start (alpha=1, p = step/1000) keeps rising past p=1: 0.462 at 1,000 steps, 0.987 at 5,000
    assert grl_coefficient(1.0, alpha=1.0) == pytest.approx(0.4621, abs=1e-4)
    assert grl_coefficient(5.0, alpha=1.0) == pytest.approx(0.9866, abs=1e-4)
    assert grl_coefficient(1.0, high=0.5) == pytest.approx(0.5 * grl_coefficient(1.0))


def test_lr_schedules():
    dann = SCHEDULES.build("dann", max_steps=5000)
    assert dann(0) == 1.0 and dann(1000) == pytest.approx(2 ** -0.75)
    prog = SCHEDULES.build("dann_progress", max_steps=1000)
    assert prog(1000) == pytest.approx(11 ** -0.75)
    cos = SCHEDULES.build("cosine", max_steps=110, warmup_steps=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0, abs=1e-12)
    assert SCHEDULES.build("constant", max_steps=10)(7) == 1.0
