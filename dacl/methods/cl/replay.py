"""Experience replay with a fixed-size reservoir buffer (Vitter 1985; Chaudhry et al. 2019), as a plugin.

The buffer is a set of device tensors; insertion is vectorised (one random draw per incoming example,
duplicates resolved as sequential insertion would). Each step, a replay batch drawn from the buffer adds
its cross-entropy to the loss; after the update the current batch is offered to the buffer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.methods.base import Plugin, StepState
from dacl.registry import PLUGINS


class ReservoirBuffer(torch.nn.Module):
    """A uniform sample of everything offered so far, never more than ``capacity`` examples.

    Known limit: the storage is allocated on the first ``add``, so restoring a checkpoint needs one ``add``
    (any batch of the right shape) before ``load_state_dict``; the CL stream loop (issue 4, not built yet) must do it.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__()
        self.capacity = capacity
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("size", torch.zeros((), dtype=torch.long))
        self.register_buffer("x", None)  # allocated on the first add, once the example shape is known
        self.register_buffer("y", None)
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, x: Tensor, y: Tensor) -> None:
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.empty(self.capacity, dtype=y.dtype, device=y.device)
        n = x.shape[0]
        positions = int(self.seen) + torch.arange(n)  # each example's 0-based arrival index
        slots = torch.where(positions < self.capacity, positions,
                            (torch.rand(n, generator=self.gen) * (positions + 1)).long())
        keep = slots < self.capacity
        # if two examples draw the same slot, the later one wins (as with sequential insertion)
        order = torch.arange(n)[keep]
        slots = slots[keep]
        last = torch.zeros(self.capacity, dtype=torch.long).scatter_reduce(0, slots, order, "amax", include_self=False)
        winners = order[last[slots] == order]
        dest = slots[last[slots] == order].to(x.device)
        self.x[dest] = x[winners.to(x.device)]
        self.y[dest] = y[winners.to(y.device)]
        self.seen += n
        self.size.fill_(min(self.capacity, int(self.seen)))

    def sample(self, k: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, int(self.size), (min(k, int(self.size)),), generator=self.gen).to(self.x.device)
        return self.x[idx], self.y[idx]


@PLUGINS.register("replay")
class Replay(Plugin):
    defaults = {"memory_size": 2000, "batch_size": 128, "weight": 1.0, "seed": 0}

    def attach(self, method) -> None:
        super().attach(method)
        self.buffer = ReservoirBuffer(self.hparams["memory_size"], self.hparams["seed"])

    def before_backward(self, state: StepState) -> None:
        if int(self.buffer.size) == 0:
            return
        x, y = self.buffer.sample(self.hparams["batch_size"])
        state.losses["replay"] = self.hparams["weight"] * F.cross_entropy(self.method.model(x).float(), y)

    def after_update(self, state: StepState) -> None:
        self.buffer.add(state.batch.x.detach(), state.batch.y.detach())
