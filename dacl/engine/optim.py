"""Optimizers and learning-rate schedules, registered by name (no if/elif dispatch)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from dacl.registry import OPTIMIZERS, SCHEDULES


def _groups(param_groups: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """Turn ``lr_mult`` into a concrete per-group ``lr``; keep the multiplier for the schedule.

    Frozen parameters are dropped unless the group sets ``include_frozen`` (gradual unfreezing: they join
    later; until then they have no gradient, so the optimizer skips them, weight decay included)."""
    out = []
    for g in param_groups:
        g = dict(g)
        g["params"] = [p for p in g["params"] if p.requires_grad or g.get("include_frozen")]
        g.pop("include_frozen", None)
        if not g["params"]:
            continue
        g["lr"] = lr * g.get("lr_mult", 1.0)
        out.append(g)
    return out


@OPTIMIZERS.register("sgd")
def sgd(param_groups: list[dict[str, Any]], lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
        nesterov: bool = True, **_: Any) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum; the DA papers' optimizer."""
    return torch.optim.SGD(_groups(param_groups, lr), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


@OPTIMIZERS.register("adamw")
def adamw(param_groups: list[dict[str, Any]], lr: float, weight_decay: float = 0.01,
          betas: tuple[float, float] = (0.9, 0.999), **_: Any) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay); the usual choice for transformers and PEFT."""
    return torch.optim.AdamW(_groups(param_groups, lr), lr=lr, weight_decay=weight_decay, betas=tuple(betas))


# Schedules are factories returning f(step) -> LR multiplier, wrapped in LambdaLR by the trainer.
Schedule = Callable[[int], float]


@SCHEDULES.register("constant")
def constant(max_steps: int, **_: Any) -> Schedule:
    """Fixed learning rate."""
    return lambda step: 1.0


@SCHEDULES.register("dann")
def dann_annealing(max_steps: int, gamma: float = 0.001, power: float = 0.75, **_: Any) -> Schedule:
    """Inverse decay lr_p = lr_0 (1 + gamma * step)^-power (as in DANN/CDAN's released code, gamma per step)."""
    return lambda step: (1.0 + gamma * step) ** (-power)


@SCHEDULES.register("dann_progress")
def dann_progress(max_steps: int, alpha: float = 10.0, power: float = 0.75, **_: Any) -> Schedule:
    """The paper's form: lr_p = lr_0 / (1 + alpha p)^power with p = step / max_steps."""
    return lambda step: (1.0 + alpha * step / max(1, max_steps)) ** (-power)


@SCHEDULES.register("step")
def step_decay(max_steps: int, steps_per_epoch: int = 1000, decay_epochs: int = 5, factor: float = 0.5,
               **_: Any) -> Schedule:
    """lr x ``factor`` at the start of every ``decay_epochs``-th epoch (1-based), as thuml/CDAN's digits script
    (``if epoch % decay_epoch == 0: lr *= 0.5``)."""
    return lambda step: factor ** ((step // max(1, steps_per_epoch) + 1) // max(1, decay_epochs))


@SCHEDULES.register("cosine")
def warmup_cosine(max_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0, **_: Any) -> Schedule:
    """Linear warm-up to the base LR, then cosine decay to ``min_ratio`` x base."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f
