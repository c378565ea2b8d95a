"""Multi-process training with ``torchrun`` + DistributedDataParallel (gloo on CPU, NCCL on GPU).

Why the global batch stays the same: every rank draws the *same* permutation (same stream seed) and keeps
its contiguous slice of each global batch, so N processes with ``batch_size=B`` see exactly the batches one
process sees with ``batch_size=B``; DDP averages gradients, so the update is the 1-process update up to
float summation order (methods whose loss is a batch statistic, e.g. MMD or CORAL, estimate it per shard).
Only rank 0 evaluates and writes files; the others wait for it at the next gradient all-reduce.

    torchrun --nproc_per_node 2 -m dacl run +experiment=mnist_usps method=dann data_root=../shared/data
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dacl.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> slice:
        """This rank's contiguous slice of a global batch (sizes must divide evenly: equal shards keep the
        DDP gradient average equal to the full-batch mean)."""
        if global_batch % self.world_size:
            raise ConfigError(f"batch size {global_batch} is not divisible by the {self.world_size} processes; "
                              f"use a multiple of {self.world_size}")
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's part of a tensor every rank holds whole (e.g. a replay batch drawn identically everywhere)."""
        return x if not self.enabled else torch.tensor_split(x, self.world_size)[self.rank]


SINGLE = DistContext()


def from_env(device_name: str) -> tuple[DistContext, str]:
    """Join the process group torchrun describes (WORLD_SIZE > 1) and pick this rank's device.
    Returns the context and the device name to use (``cuda:<local_rank>`` under NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local_rank), device_name


def all_gather_cat(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's equally-shaped tensor in rank order (so all ranks hold the global batch)."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any (one all-reduce), so ranks agree on when to stop: a signal that
    reaches the ranks at different steps must not leave one rank waiting in an all-reduce the others have left."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def current() -> DistContext:
    """The context of an already-initialised process group (plugins use it to synchronise their state)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class StepModule(nn.Module):
    """Wraps a Method so DDP sees one forward (training step + before_backward hooks -> total loss): DDP then
    all-reduces every gradient the loss reaches, including discriminator and plugin parameters."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, state) -> torch.Tensor:  # noqa: ANN001  (StepState; imported lazily to avoid a cycle)
        self.method.training_step(state)
        for h in self.method.hooks:
            h.before_backward(state)
        return state.total_loss()


def wrap(method: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP around the method's step; ``find_unused_parameters`` because some heads sit out some steps.

    On GPU, BatchNorm layers become SyncBatchNorm (statistics over the global batch, as in one process; the
    parameters are the same objects, so the optimizer is unaffected). torch's SyncBatchNorm has no CPU kernel:
    under gloo each process normalises with its shard's statistics, the one non-exact part of a CPU run."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    on_gpu = next(method.parameters()).is_cuda
    if on_gpu:
        nn.SyncBatchNorm.convert_sync_batchnorm(method)  # replaces BN children in place
    device_ids = [ctx.local_rank] if on_gpu else None
    return DDP(StepModule(method), device_ids=device_ids, find_unused_parameters=True)
