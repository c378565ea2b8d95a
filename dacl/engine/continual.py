"""The continual-learning loop: train on a stream's tasks in order, evaluate every task after each one.

Scenarios (van de Ven & Tolias 2019):
- ``class``: one head over all classes of the stream; no task identity at test time. With
  ``mask_unseen_classes`` (default, as in the paper's code) only classes seen so far take part in the softmax,
  in training and at evaluation;
- ``task``: the same head, but logits outside the current task's classes are masked (a multi-headed output
  layer; task identity given);
- ``domain``: labels are re-indexed within each task (e.g. Split MNIST: "first or second class of the pair"),
  one small head shared by all tasks; no task identity.
The method's hooks run as in every dacl run (before/after_experience, before_backward, after_update), so CL
plugins (EWC, LwF, replay) stack. The result holds the accuracy matrix and its summaries.
Each experience tells the plugins its scenario and its classes in the head's label space, so LwF distils the
old heads and replay scores each stored example with its own task's head.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from dacl import distributed
from dacl.data.stream import BatchStream
from dacl.data.streams import Stream, Task
from dacl.errors import ConfigError, NonFiniteLossError
from dacl.methods.base import Batch, Experience, Method, StepState
from dacl.metrics.continual import summarise
from dacl.registry import OPTIMIZERS

SCENARIOS = ("task", "domain", "class")


@dataclass
class ContinualConfig:
    scenario: str = "class"
    steps_per_task: int = 2000
    epochs_per_task: int | None = None  # if set, overrides steps_per_task: this many passes over each task's data
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    reset_optimizer: bool = True  # a fresh optimizer per task (the authors' code keeps Adam's state: see configs/stream)
    joint: bool = False           # upper bound: one experience holding every task's data
    mask_unseen_classes: bool = True  # class-IL: softmax over the classes seen so far only
    eval_batch_size: int = 4096


class TaskMask(nn.Module):
    """Wraps a classifier; while ``active`` holds class indices, every other logit is -inf (task-IL)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.active: Tensor | None = None
        self.feature_dim = getattr(model, "feature_dim", None)

    def __getstate__(self) -> dict:  # deepcopy/pickle: never carry a graph-holding cache along
        state = dict(super().__getstate__())
        state.pop("last_unmasked", None)
        return state

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        self.last_unmasked = (x, logits)  # lets LwF reuse the raw logits of this very input instead of re-running
        if self.active is None:
            return logits
        mask = torch.full_like(logits, float("-inf"))
        mask[:, self.active] = 0.0
        return logits + mask


def head_size(stream: Stream, scenario: str) -> int:
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown CL scenario '{scenario}'; choose one of {', '.join(SCENARIOS)}")
    return len(stream.tasks[0].classes) if scenario == "domain" else stream.num_classes


def _labels(task: Task, y: Tensor, scenario: str) -> Tensor:
    if scenario != "domain":
        return y
    lookup = torch.full((int(max(task.classes)) + 1,), -1, dtype=torch.long, device=y.device)
    lookup[torch.tensor(task.classes, device=y.device)] = torch.arange(len(task.classes), device=y.device)
    return lookup[y]


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    was = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    model.train(was)
    return correct / max(1, len(x))


def run_stream(method: Method, stream: Stream, cfg: ContinualConfig, seed: int = 0,
               progress: Callable[[int, float], None] | None = None,
               dist: distributed.DistContext = distributed.SINGLE) -> dict:
    """Train ``method`` (already ``setup`` with a ``TaskMask``-wrapped model) on ``stream``; returns metrics.

    Under torchrun (``dist``) each process trains on its shard of every global batch inside DDP; all
    processes evaluate (test sets are small) so every hook sees the same state.

    ``progress(task_index, mean accuracy over the tasks seen so far)`` is called after each task.
    """
    model = method.model
    masks_classes = cfg.scenario == "task" or (cfg.scenario == "class" and cfg.mask_unseen_classes)
    if masks_classes and not isinstance(model, TaskMask):
        raise ConfigError(f"the {cfg.scenario}-IL scenario masks logits: wrap the model in TaskMask "
                          "before method.setup, or set mask_unseen_classes=false")
    head_size(stream, cfg.scenario)  # validates the scenario name
    device = next(model.parameters()).device
    experiences = [_joint(stream, cfg.scenario)] if cfg.joint else stream.tasks
    n = len(stream.tasks)
    matrix = np.zeros((len(experiences), n))
    seen_images, train_seconds, per_task_seconds = 0, 0.0, []
    optimizer = None
    step_fn = distributed.wrap(method, dist) if dist.enabled else distributed.StepModule(method)  # DDP under torchrun
    seen: list[int] = []
    baseline = []  # accuracy of the untrained model on each task (b_j of GEM's forward transfer)
    for j, tj in enumerate(stream.tasks):
        if masks_classes:
            model.active = torch.tensor(tj.classes if cfg.scenario == "task" else
                                        sorted({c for t in stream.tasks[:j + 1] for c in t.classes}), device=device)
        baseline.append(_accuracy(model, tj.test[0], _labels(tj, tj.test[1], cfg.scenario), cfg.eval_batch_size))
    for i, task in enumerate(experiences):
        x, y = task.train[0], (task.train[1] if cfg.joint else _labels(task, task.train[1], cfg.scenario))
        head_classes = tuple(range(len(task.classes))) if cfg.scenario == "domain" and not cfg.joint else task.classes
        seen = sorted({*seen, *head_classes})
        exp = Experience(i, task.name, head_classes, data=(x, y), scenario=cfg.scenario)
        if masks_classes:
            active = task.classes if cfg.scenario == "task" else seen
            model.active = None if cfg.joint else torch.tensor(active, device=device)
        for h in method.hooks:
            h.before_experience(exp)
        if optimizer is None or cfg.reset_optimizer:
            optimizer = OPTIMIZERS.get(cfg.optimizer)(method.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        global_batch = min(cfg.batch_size, len(x))
        batches = BatchStream(len(x), global_batch, seed * 1000 + i, device,
                              shard=dist.shard(global_batch) if dist.enabled else None)
        method.train()
        if cfg.epochs_per_task:
            steps = cfg.epochs_per_task * -(-len(x) // cfg.batch_size)  # ceil: the last partial batch counts
        else:
            steps = cfg.steps_per_task * (n if cfg.joint else 1)  # joint gets the whole stream's iteration budget
        t0 = time.perf_counter()
        for step in range(steps):
            idx = batches.next_indices()
            state = StepState(step, steps, Batch(x[idx], y[idx], task_id=i))
            loss = step_fn(state)  # training_step + before_backward hooks -> total loss
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss at task {i} step {step} ({ {k: float(v) for k, v in state.losses.items()} }); lower the lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for h in method.hooks:
                h.after_backward(state)
            optimizer.step()
            for h in method.hooks:
                h.after_update(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_task_seconds.append(time.perf_counter() - t0)
        train_seconds += per_task_seconds[-1]
        seen_images += steps * global_batch
        for h in method.hooks:
            h.after_experience(exp)
        for j, tj in enumerate(stream.tasks):
            if cfg.scenario == "task":
                model.active = torch.tensor(tj.classes, device=device)
            matrix[i, j] = _accuracy(model, tj.test[0], _labels(tj, tj.test[1], cfg.scenario), cfg.eval_batch_size)
        if progress is not None:
            progress(i, matrix[i, :i + 1].mean() if not cfg.joint else matrix[i].mean())
    if masks_classes:
        model.active = None
    summary = summarise(matrix, baseline) if not cfg.joint else {"average_accuracy": float(matrix[-1].mean())}
    return {"accuracy_matrix": matrix.tolist(), **summary, "train_seconds": train_seconds,
            "per_task_seconds": per_task_seconds, "initial_accuracy": baseline, "images_per_second": seen_images / max(train_seconds, 1e-9)}


def _joint(stream: Stream, scenario: str) -> Task:
    """All tasks' training data as one experience, labels already in the scenario's label space."""
    xs = torch.cat([t.train[0] for t in stream.tasks])
    ys = torch.cat([_labels(t, t.train[1], scenario) for t in stream.tasks])
    classes = tuple(sorted({c for t in stream.tasks for c in t.classes}))
    return Task("joint", (xs, ys), (xs[:0], ys[:0]), classes)
