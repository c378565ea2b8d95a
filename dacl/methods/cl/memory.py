"""Fixed-size example memories for the memory-based CL plugins (replay, A-GEM).

Three buffers: ``reservoir`` (Vitter 1985: a uniform sample of the stream), ``class_balanced`` (the memory
split equally over the classes seen so far, a reservoir inside each class, so rare or early classes keep
their share) and ``experience_balanced`` (split equally over past experiences and filled only when one ends,
as Avalanche's ``Replay``: replay batches then never contain the current task). Buffers are device tensors;
insertion is vectorised (one random draw per incoming example, duplicates resolved as sequential insertion
would). ``PerTaskHeads`` lets a plugin score stored examples with their own task's head in task-IL.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dacl.methods.base import Experience, GrowingState
from dacl.methods.cl.lwf import unmasked


class ReservoirBuffer(GrowingState, torch.nn.Module):
    """A uniform sample of everything offered so far, never more than ``capacity`` examples.

    The storage is allocated on the first ``add``; a checkpoint restores it (and the sampling generator) into a
    fresh buffer (``GrowingState``).
    """

    resumable_attrs = ("capacity",)

    fill_at_experience_end = False  # filled from every training batch

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__()
        self.capacity = capacity
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("size", torch.zeros((), dtype=torch.long))
        self.register_buffer("x", None)  # allocated on the first add, once the example shape is known
        self.register_buffer("y", None)
        self.register_buffer("z", None)  # optional per-example extra (DER's stored logits), kept with x and y
        self.gen = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "generator": self.gen.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.gen.set_state(state.pop("generator"))
        super().set_extra_state(state)

    def add(self, x: Tensor, y: Tensor, z: Tensor | None = None) -> None:
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.empty(self.capacity, dtype=y.dtype, device=y.device)
            if z is not None:
                self.z = torch.empty((self.capacity, *z.shape[1:]), dtype=z.dtype, device=z.device)
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
        if z is not None:
            self.z[dest] = z[winners.to(z.device)]
        self.seen += n
        self.size.fill_(min(self.capacity, int(self.seen)))

    def sample(self, k: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, int(self.size), (min(k, int(self.size)),), generator=self.gen).to(self.x.device)
        return self.x[idx], self.y[idx]

    def sample_with_extra(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """``sample`` plus each example's stored extra (``z``)."""
        idx = torch.randint(0, int(self.size), (min(k, int(self.size)),), generator=self.gen).to(self.x.device)
        return self.x[idx], self.y[idx], self.z[idx]

    def shrink(self, capacity: int) -> None:
        """Keep a uniformly random ``capacity`` of the stored examples; later arrivals stay uniform (seen kept)."""
        if self.x is not None and int(self.size) > capacity:
            keep = torch.randperm(int(self.size), generator=self.gen)[:capacity].to(self.x.device)
            self.x, self.y = self.x[keep].clone(), self.y[keep].clone()
            self.z = self.z[keep].clone() if self.z is not None else None
            self.size.fill_(capacity)
        elif self.x is not None:
            self.x, self.y = self.x[:capacity].clone(), self.y[:capacity].clone()
            self.z = self.z[:capacity].clone() if self.z is not None else None
        self.capacity = capacity


class BalancedBuffer(GrowingState, torch.nn.Module):
    """``capacity`` examples split equally over the groups seen so far; a reservoir inside each group."""

    fill_at_experience_end = False

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__()
        self.capacity, self.seed = capacity, seed
        self.groups = torch.nn.ModuleDict()
        self.gen = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict:
        return {"generator": self.gen.get_state(), "groups": list(self.groups)}

    def set_extra_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        """Groups appear as experiences or classes arrive: re-create those the checkpoint holds, in its order."""
        groups = state_dict.get(prefix + "_extra_state", {}).get("groups", [])
        for key in groups:
            if key not in self.groups:
                self.groups[key] = ReservoirBuffer(1, seed=self.seed * 1000 + int(key))  # capacity restored on load
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def size(self) -> Tensor:
        return sum((b.size for b in self.groups.values()), torch.zeros((), dtype=torch.long))

    def add_groups(self, keys: list[int], x: Tensor, y: Tensor, group_of: Tensor) -> None:
        """Offer examples whose group key is ``group_of``; new keys shrink every group to the new equal share."""
        new = [k for k in keys if str(k) not in self.groups]
        if new:
            quota = self.capacity // (len(self.groups) + len(new))
            for buf in self.groups.values():
                buf.shrink(quota)
            for k in new:
                self.groups[str(k)] = ReservoirBuffer(quota, seed=self.seed * 1000 + k)
        for k in keys:
            mask = group_of == k
            self.groups[str(k)].add(x[mask], y[mask])

    def sample(self, k: int) -> tuple[Tensor, Tensor]:
        bufs = [b for b in self.groups.values() if int(b.size) > 0]
        sizes = torch.tensor([int(b.size) for b in bufs])
        draws = torch.randint(0, int(sizes.sum()), (min(k, int(sizes.sum())),), generator=self.gen)
        owner = torch.searchsorted(sizes.cumsum(0), draws, right=True)
        offsets = sizes.cumsum(0) - sizes
        xs, ys = [], []
        for i, b in enumerate(bufs):  # one gather per group (<= #classes or #experiences), not per example
            local = (draws[owner == i] - offsets[i]).to(b.x.device)
            if len(local):
                xs.append(b.x[local])
                ys.append(b.y[local])
        return torch.cat(xs), torch.cat(ys)


class ClassBalancedBuffer(BalancedBuffer):
    """Groups are classes, so rare or early classes keep their share; filled from every training batch."""

    def add(self, x: Tensor, y: Tensor) -> None:
        self.add_groups(y.unique().tolist(), x, y, y)  # one group per class in the batch, not per example


class ExperienceBalancedBuffer(BalancedBuffer):
    """Groups are experiences, filled only when an experience ends (Avalanche's default ``Replay`` policy): while
    a task trains, replay batches hold past tasks only, never the current one."""

    fill_at_experience_end = True

    def add_experience(self, index: int, x: Tensor, y: Tensor) -> None:
        self.add_groups([index], x, y, torch.full((len(y),), index, dtype=torch.long, device=y.device))


BUFFERS = {"reservoir": ReservoirBuffer, "class_balanced": ClassBalancedBuffer, "experience_balanced": ExperienceBalancedBuffer}


class PerTaskHeads:
    """Task-IL: remember which task's head owns each label, so stored examples are scored with their own head
    (not the current task's mask). Mixed into memory-based plugins (replay, A-GEM)."""

    _task_of_label: Tensor | None = None
    _task_il: bool = False
    resumable_attrs = ("_task_of_label", "_task_il")

    def before_experience(self, experience: Experience) -> None:
        self._task_il = experience.scenario == "task" and experience.classes is not None
        if self._task_il:
            classes = torch.tensor(experience.classes)
            old = self._task_of_label
            size = max(int(classes.max()) + 1, 0 if old is None else len(old))  # later tasks may hold lower labels
            table = torch.zeros((size, size), dtype=torch.bool)
            if old is not None:
                table[:len(old), :len(old)] = old
            table[classes.unsqueeze(1), classes.unsqueeze(0)] = True
            self._task_of_label = table

    def memory_logits(self, x: Tensor, y: Tensor) -> Tensor:
        model = self.method.model
        if not self._task_il:
            return model(x)
        logits = unmasked(model)(x)
        table = self._task_of_label.to(x.device)
        allowed = torch.zeros(len(y), logits.shape[1], dtype=torch.bool, device=x.device)
        allowed[:, :table.shape[1]] = table[y]
        return logits.masked_fill(~allowed, float("-inf"))
