"""Gradient reversal (Ganin & Lempitsky 2015) and its warm-start coefficient schedule."""
from __future__ import annotations

import math

import torch
from torch import Tensor


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.coeff * grad, None


def reverse_gradient(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward."""
    return _ReverseGrad.apply(x, coeff)


def grl_coefficient(progress: float, alpha: float = 10.0, low: float = 0.0, high: float = 1.0) -> float:
    """DANN's warm start: lambda_p = 2(high-low)/(1+exp(-alpha p)) - (high-low) + low.

    Starts at ``low`` so the untrained discriminator's noisy gradients do not wreck early features, and
    approaches ``high``. ``p`` may exceed 1 (TLlib's schedule counts p = step/1000 over 5,000 steps).
    """
    p = max(progress, 0.0)
    return float(2.0 * (high - low) / (1.0 + math.exp(-alpha * p)) - (high - low) + low)
