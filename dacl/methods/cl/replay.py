"""Experience replay with a fixed memory (Chaudhry et al. 2019), as a plugin.

The memory is one of the buffers in ``memory.py`` (``buffer: reservoir | class_balanced |
experience_balanced``). Each step a replay batch adds its cross-entropy to the loss; after the update the
current batch is offered to the buffer (experience_balanced: the whole experience, once it ends). Under
torchrun every process offers the *global* batch (all-gathered) with the same generator, so all buffers stay
identical, and each process replays its own slice of the same replay batch: the DDP gradient equals one
process's. In task-IL each replayed example is scored with its own task's head (the mask of the task that
owns its label), not the current one.
"""
from __future__ import annotations

import torch.nn.functional as F

from dacl import distributed
from dacl.errors import ConfigError
from dacl.methods.base import Experience, Plugin, StepState
from dacl.methods.cl.memory import BUFFERS, PerTaskHeads
from dacl.registry import PLUGINS


@PLUGINS.register("replay")
class Replay(PerTaskHeads, Plugin):
    defaults = {"memory_size": 2000, "batch_size": 128, "weight": 1.0, "buffer": "reservoir", "seed": 0}

    def attach(self, method) -> None:
        super().attach(method)
        if self.hparams["buffer"] not in BUFFERS:
            raise ConfigError(f"replay buffer '{self.hparams['buffer']}' unknown; choose one of {', '.join(BUFFERS)}")
        self.buffer = BUFFERS[self.hparams["buffer"]](self.hparams["memory_size"], self.hparams["seed"])

    def before_backward(self, state: StepState) -> None:
        if int(self.buffer.size) == 0:
            return
        x, y = self.buffer.sample(self.hparams["batch_size"])
        ctx = distributed.current()
        x, y = ctx.split(x), ctx.split(y)
        weight = state.batch.task_id if self.hparams["weight"] == "auto" else float(self.hparams["weight"])
        state.losses["replay"] = weight * F.cross_entropy(self.memory_logits(x, y).float(), y)

    def after_update(self, state: StepState) -> None:
        if self.buffer.fill_at_experience_end:
            return
        ctx = distributed.current()
        self.buffer.add(distributed.all_gather_cat(state.batch.x.detach(), ctx),
                        distributed.all_gather_cat(state.batch.y.detach(), ctx))

    def after_experience(self, experience: Experience) -> None:
        if not self.buffer.fill_at_experience_end:
            return
        if experience.data is None:
            raise ConfigError("replay with buffer=experience_balanced needs the experience's data (Experience.data)")
        self.buffer.add_experience(experience.index, *experience.data)  # same data and generator on every process
