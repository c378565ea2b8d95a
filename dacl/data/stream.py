"""Endless shuffled mini-batches over tensors that already live on the training device.

Each epoch is one permutation drawn from a dedicated generator (saved in checkpoints, so resumed runs
see the same batches); a batch is one gather ``x[idx]`` on the device, with no per-sample Python.
"""
from __future__ import annotations

from typing import Any

import torch

from dacl.errors import ConfigError


class BatchStream:
    def __init__(self, size: int, batch_size: int, seed: int, device: torch.device | str,
                 shard: slice | None = None) -> None:
        """``shard``: under DDP, this process's slice of each global batch (every rank draws the same permutation)."""
        if batch_size > size:
            raise ConfigError(f"batch size {batch_size} exceeds the {size} available examples; lower the batch size")
        self.size, self.batch_size, self.device, self.seed = size, batch_size, torch.device(device), seed
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = size  # forces a fresh permutation on first use
        self.epoch = 0
        self.shard = shard

    def next_indices(self) -> torch.Tensor:
        if self._pos + self.batch_size > self.size:  # drop the ragged tail: every batch has equal size
            self._perm = torch.randperm(self.size, generator=self.generator).to(self.device, non_blocking=True)
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx if self.shard is None else idx[self.shard]

    def last_draw_id(self) -> int:
        """A number naming the last batch's first draw across the whole run (epoch and position)."""
        return self.epoch * self.size + self._pos - self.batch_size

    def cpu_copy(self) -> "BatchStream":
        """The same stream at the same position, drawing on the CPU (a loader's look-ahead)."""
        twin = BatchStream(self.size, self.batch_size, self.seed, "cpu", shard=self.shard)
        twin.load_state_dict(self.state_dict())
        return twin

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self._perm.cpu(), "pos": self._pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].to(self.device)
        self._pos, self.epoch = int(state["pos"]), int(state["epoch"])


class ClassBalancedStream:
    """Batches of ``batch_size // num_classes`` examples of every class, drawn afresh (without replacement within a
    class) at every step: DeepJDOT's ``mini_batch_class_balanced`` source batches (bbdamodaran/deepJDOT,
    deepjdot_svhn_mnist.py: 50 per class, 500 per batch). One sort of random keys grouped by label per batch."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, device: torch.device | str,
                 shard: slice | None = None) -> None:
        labels = labels.detach().cpu()
        self.num_classes = int(labels.max()) + 1
        self.per_class = batch_size // self.num_classes
        counts = torch.bincount(labels, minlength=self.num_classes)
        if self.per_class < 1 or int(counts.min()) < self.per_class:
            raise ConfigError(f"class-balanced batches of {batch_size} need {max(1, self.per_class)} examples of each of "
                              f"{self.num_classes} classes; the rarest class has {int(counts.min())}: lower the batch size")
        self.labels, self.size, self.batch_size = labels, len(labels), self.per_class * self.num_classes
        self.starts = torch.cumsum(counts, 0) - counts
        self.take = (self.starts.unsqueeze(1) + torch.arange(self.per_class)).reshape(-1)
        self.generator = torch.Generator().manual_seed(seed)
        self.device, self.seed, self.shard = torch.device(device), seed, shard
        self.epoch = 0  # batches drawn (every batch is a fresh draw)

    def next_indices(self) -> torch.Tensor:
        keys = self.labels.double() + torch.rand(self.size, generator=self.generator, dtype=torch.float64)
        idx = torch.argsort(keys)[self.take].to(self.device, non_blocking=True)
        self.epoch += 1
        return idx if self.shard is None else idx[self.shard]

    def last_draw_id(self) -> int:
        return (self.epoch - 1) * self.batch_size

    def cpu_copy(self) -> "ClassBalancedStream":
        twin = ClassBalancedStream(self.labels, self.batch_size, self.seed, "cpu", shard=self.shard)
        twin.load_state_dict(self.state_dict())
        return twin

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
