"""The continual-learning loop: train on a stream's tasks in order, evaluate every task after each one.

Scenarios (van de Ven & Tolias 2019):
- ``class``: one head over all classes seen in the stream; no task identity at test time;
- ``task``: the same head, but logits outside the current task's classes are masked (task identity given);
- ``domain``: labels are re-indexed within each task (e.g. Split MNIST: "first or second class of the pair"),
  one small head shared by all tasks; no task identity.
The method's hooks run as in every dacl run (before/after_experience, before_backward, after_update), so CL
plugins (EWC, LwF, replay) stack. The result holds the accuracy matrix and its summaries.
Known limit: in the task-IL scenario replayed examples are masked with the *current* task's classes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

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
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    reset_optimizer: bool = True  # a fresh optimizer per task (van de Ven & Tolias)
    joint: bool = False           # upper bound: one experience holding every task's data
    eval_batch_size: int = 4096


class TaskMask(nn.Module):
    """Wraps a classifier; while ``active`` holds class indices, every other logit is -inf (task-IL)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.active: Tensor | None = None
        self.feature_dim = getattr(model, "feature_dim", None)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
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


def wrap_for_scenario(model: nn.Module) -> TaskMask:
    return TaskMask(model)


def run_stream(method: Method, stream: Stream, cfg: ContinualConfig, seed: int = 0) -> dict:
    """Train ``method`` (already ``setup`` with a ``TaskMask``-wrapped model) on ``stream``; returns metrics."""
    model = method.model
    if cfg.scenario == "task" and not isinstance(model, TaskMask):
        raise ConfigError("the task-IL scenario needs the model wrapped in TaskMask (build it with wrap_for_scenario)")
    device = next(model.parameters()).device
    experiences = [_joint(stream, cfg.scenario)] if cfg.joint else stream.tasks
    n = len(stream.tasks)
    matrix = np.zeros((len(experiences), n))
    seen_images, train_seconds = 0, 0.0
    optimizer = None
    for i, task in enumerate(experiences):
        x, y = task.train[0], (task.train[1] if cfg.joint else _labels(task, task.train[1], cfg.scenario))
        exp = Experience(i, task.name, task.classes, data=(x, y))
        if cfg.scenario == "task":
            model.active = None if cfg.joint else torch.tensor(task.classes, device=device)
        for h in method.hooks:
            h.before_experience(exp)
        if optimizer is None or cfg.reset_optimizer:
            optimizer = OPTIMIZERS.get(cfg.optimizer)(method.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batches = BatchStream(len(x), min(cfg.batch_size, len(x)), seed * 1000 + i, device)
        method.train()
        t0 = time.perf_counter()
        for step in range(cfg.steps_per_task):
            idx = batches.next_indices()
            state = StepState(step, cfg.steps_per_task, Batch(x[idx], y[idx], task_id=i))
            method.training_step(state)
            for h in method.hooks:
                h.before_backward(state)
            loss = state.total_loss()
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss at task {i} step {step} ({ {k: float(v) for k, v in state.losses.items()} }); lower the lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for h in method.hooks:
                h.after_update(state)
        train_seconds += time.perf_counter() - t0
        seen_images += cfg.steps_per_task * len(idx)
        for h in method.hooks:
            h.after_experience(exp)
        for j, tj in enumerate(stream.tasks):
            if cfg.scenario == "task":
                model.active = torch.tensor(tj.classes, device=device)
            matrix[i, j] = _accuracy(model, tj.test[0], _labels(tj, tj.test[1], cfg.scenario), cfg.eval_batch_size)
    if cfg.scenario == "task":
        model.active = None
    summary = summarise(matrix) if not cfg.joint else {"average_accuracy": float(matrix[-1].mean())}
    return {"accuracy_matrix": matrix.tolist(), **summary, "train_seconds": train_seconds,
            "images_per_second": seen_images / max(train_seconds, 1e-9)}


def _joint(stream: Stream, scenario: str) -> Task:
    """All tasks' training data as one experience, labels already in the scenario's label space."""
    xs = torch.cat([t.train[0] for t in stream.tasks])
    ys = torch.cat([_labels(t, t.train[1], scenario) for t in stream.tasks])
    classes = tuple(sorted({c for t in stream.tasks for c in t.classes}))
    return Task("joint", (xs, ys), (xs[:0], ys[:0]), classes)
