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

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self._perm.cpu(), "pos": self._pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].to(self.device)
        self._pos, self.epoch = int(state["pos"]), int(state["epoch"])
