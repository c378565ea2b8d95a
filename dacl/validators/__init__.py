"""Model-selection validators: score a checkpoint from what a protocol may see (label-free on target).

Each validator gets an ``EvalContext`` and returns a score where higher is better. ``oracle`` reads
target *test* labels and exists only to show the gap; it is always reported under that name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from dacl.metrics import accuracy
from dacl.registry import VALIDATORS


@dataclass
class EvalContext:
    source_val_logits: Tensor
    source_val_labels: Tensor
    target_logits: Tensor            # unlabelled target predictions (target test inputs)
    target_labels: Tensor | None     # None for every validator except those marked uses_target_labels (the oracle)
    feature_fn: Callable[[str], Tensor] | None = None  # bottleneck features of "source_train", "source_val", "target"

    def features(self, split: str) -> Tensor:
        if self.feature_fn is None:
            raise RuntimeError("this validator needs features: mark it needs_features = True")
        return self.feature_fn(split)


@VALIDATORS.register("source_val")
def source_val_accuracy(ctx: EvalContext) -> float:
    """Accuracy on held-out *source* data (the classic, label-free-on-target protocol)."""
    return accuracy(ctx.source_val_logits, ctx.source_val_labels)


@VALIDATORS.register("oracle")
def oracle(ctx: EvalContext) -> float:
    """Target test accuracy. Uses target labels: an upper bound, never a selection rule to report as ours."""
    assert ctx.target_labels is not None
    return accuracy(ctx.target_logits, ctx.target_labels)


oracle.uses_target_labels = True  # type: ignore[attr-defined]  # the only validator the trainer gives labels to


from dacl.validators import unsupervised  # noqa: E402,F401  (registers entropy, im, bnm, snd)
