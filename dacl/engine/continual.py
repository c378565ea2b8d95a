"""Continual learning as a curriculum of the one training loop: a stream's tasks are its experiences, and after
each one every task is scored (the accuracy matrix).

Scenarios (van de Ven & Tolias 2019):
- ``class``: one head over all classes of the stream; no task identity at test time. With
  ``mask_unseen_classes`` (default, as in the paper's code) only classes seen so far take part in the softmax,
  in training and at evaluation;
- ``task``: the same head, but logits outside the current task's classes are masked (a multi-headed output
  layer; task identity given);
- ``domain``: labels are re-indexed within each task (e.g. Split MNIST: "first or second class of the pair"),
  one small head shared by all tasks; no task identity.
Masking works by ``TaskMask``: masked logits are -inf. A plugin that needs every head's logits (LwF's old
classes, replay scoring a stored example with its own task's head) reads them through ``lwf.unmasked(model)``
or ``TaskMask.last_unmasked`` (the raw logits of the last input).
The method's hooks run as in every dacl run (before/after_experience, before_backward, after_backward,
after_update, end_training), so CL plugins (EWC, LwF, replay) stack. Each experience tells the plugins its
scenario and its classes in the head's label space, so LwF distils the old heads and replay scores each stored
example with its own task's head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dacl import distributed
from dacl.data.streams import Stream, Task
from dacl.engine.curriculum import Curriculum, Stage
from dacl.engine.trainer import Trainer, TrainerConfig, check_number
from dacl.errors import ConfigError
from dacl.methods.base import Experience, Method
from dacl.metrics.continual import summarise

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
    momentum: float = 0.9         # SGD only (mammoth's recipes: 0)
    reset_optimizer: bool = True  # a fresh optimizer per task (the authors' code keeps Adam's state: see configs/stream)
    joint: bool = False           # upper bound: one experience holding every task's data
    mask_unseen_classes: bool = True  # class-IL: softmax over the classes seen so far only
    eval_batch_size: int = 4096
    log_every: int = 50           # train_log.csv rows, and how often a non-finite loss is caught (one host sync each)
    amp: str = "auto"             # as trainer.amp: bf16 autocast on CUDA, off on CPU
    grad_clip: float | None = None
    ckpt_every: int = 0           # checkpoint every N steps (global over the stream); resume continues bitwise
    resume: bool = False

    def __post_init__(self) -> None:
        """Ranges checked before any work, with the trainer.* names a user typed."""
        for name in ("steps_per_task", "batch_size", "eval_batch_size", "log_every"):
            check_number(f"trainer.{name}", getattr(self, name), integer=True, minimum=1)
        check_number("trainer.epochs_per_task", self.epochs_per_task, integer=True, minimum=1, optional=True)
        check_number("trainer.ckpt_every", self.ckpt_every, integer=True, minimum=0)
        check_number("trainer.lr", self.lr, minimum=0.0)
        check_number("trainer.weight_decay", self.weight_decay, minimum=0.0)
        check_number("trainer.grad_clip", self.grad_clip, minimum=0.0, exclusive=True, optional=True)


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


class ContinualStream(Curriculum):
    """A stream's tasks as the loop's experiences (or one joint experience, the upper bound); after each one every
    task's test set is scored, which fills row i of the accuracy matrix. Masks follow the scenario."""

    periodic_eval = False

    def __init__(self, method: Method, stream: Stream, cfg: ContinualConfig, seed: int = 0,
                 progress: Callable[[int, float], None] | None = None) -> None:
        self.model, self.stream, self.cfg, self.progress = method.model, stream, cfg, progress
        self.name = f"{getattr(stream, 'name', 'stream')} {cfg.scenario}-IL"
        self.masks_classes = cfg.scenario == "task" or (cfg.scenario == "class" and cfg.mask_unseen_classes)
        if self.masks_classes and not isinstance(self.model, TaskMask):
            raise ConfigError(f"the {cfg.scenario}-IL scenario masks logits: wrap the model in TaskMask "
                              "before method.setup, or set mask_unseen_classes=false")
        head_size(stream, cfg.scenario)  # validates the scenario name
        self.device = next(self.model.parameters()).device
        n = len(stream.tasks)
        tasks = [_joint(stream, cfg.scenario)] if cfg.joint else stream.tasks
        self._stages: list[Stage] = []
        self._active: list[Sequence[int] | None] = []  # each experience's unmasked classes (None: all)
        seen: list[int] = []
        for i, task in enumerate(tasks):
            x, y = task.train[0], (task.train[1] if cfg.joint else _labels(task, task.train[1], cfg.scenario))
            head_classes = tuple(range(len(task.classes))) if cfg.scenario == "domain" and not cfg.joint else task.classes
            seen = sorted({*seen, *head_classes})
            if cfg.epochs_per_task:
                steps = cfg.epochs_per_task * -(-len(x) // cfg.batch_size)  # ceil: the last partial batch counts
            else:
                steps = cfg.steps_per_task * (n if cfg.joint else 1)  # joint gets the whole stream's iteration budget
            exp = Experience(i, task.name, head_classes, data=(x, y), scenario=cfg.scenario)
            self._stages.append(Stage(exp, x, y, steps, min(cfg.batch_size, len(x)), seed * 1000 + i))
            self._active.append(None if cfg.joint else (task.classes if cfg.scenario == "task" else tuple(seen)))

    def stages(self) -> list[Stage]:
        return self._stages

    def _mask(self, classes: Sequence[int] | None) -> None:
        if self.masks_classes:
            self.model.active = None if classes is None else torch.tensor(classes, device=self.device)

    def enter(self, index: int) -> None:
        self._mask(self._active[index])

    def _score_tasks(self, mask_of: Callable[[int], Sequence[int]] | None) -> list[float]:
        """Accuracy on every task's test set; ``mask_of(j)``: the classes left unmasked while task j is scored."""
        accs = []
        for j, tj in enumerate(self.stream.tasks):
            if mask_of is not None:
                self._mask(mask_of(j))
            accs.append(_accuracy(self.model, tj.test[0], _labels(tj, tj.test[1], self.cfg.scenario),
                                  self.cfg.eval_batch_size))
        return accs

    def initial_records(self, trainer) -> list[dict[str, float]]:
        """The untrained model on every task (b_j of GEM's forward transfer), as experience -1: each task with the
        mask it will train under (its own classes in task-IL, the classes seen up to it in class-IL)."""
        tasks = self.stream.tasks
        own = (lambda j: tasks[j].classes) if self.cfg.scenario == "task" else \
            (lambda j: sorted({c for t in tasks[:j + 1] for c in t.classes}))
        accs = self._score_tasks(own if self.masks_classes else None)
        return [{"step": 0, "experience": -1, **{f"task_acc/{j}": a for j, a in enumerate(accs)}}]

    def evaluate(self, trainer, experience_index: int) -> dict[str, float]:
        """Row ``experience_index`` of the accuracy matrix: task-IL scores each task with its own head, class-IL
        with the classes seen so far (the current mask)."""
        task_il = self.cfg.scenario == "task"
        accs = self._score_tasks((lambda j: self.stream.tasks[j].classes) if task_il else None)
        self._mask(self._active[experience_index])
        if self.progress is not None:
            i = experience_index
            self.progress(i, float(np.mean(accs[:i + 1] if not self.cfg.joint else accs)))
        return {"step": trainer.step, "experience": experience_index, **{f"task_acc/{j}": a for j, a in enumerate(accs)}}


def trainer_config(cfg: ContinualConfig) -> TrainerConfig:
    """The loop's settings for a CL protocol: constant LR, evaluation after each experience. ``max_steps`` and
    ``eval_every`` are unused here: the stream's experiences set the steps, and it is scored after each one."""
    return TrainerConfig(max_steps=1, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, momentum=cfg.momentum, schedule="constant", eval_every=1, log_every=cfg.log_every,
                         eval_batch_size=cfg.eval_batch_size, validators=[], progress=False, save_model=False,
                         channels_last=False, reset_optimizer=cfg.reset_optimizer, device="auto", amp=cfg.amp,
                         grad_clip=cfg.grad_clip, ckpt_every=cfg.ckpt_every, resume=cfg.resume)


def accuracy_matrix(history: list[dict[str, float]], n_tasks: int) -> tuple[list[float], np.ndarray]:
    """(untrained accuracies, matrix[i][j] = accuracy on task j after experience i) from the loop's eval records."""
    row = lambda rec: [rec[f"task_acc/{j}"] for j in range(n_tasks)]  # noqa: E731
    baseline = [row(r) for r in history if r["experience"] == -1]
    return (baseline[0] if baseline else []), np.array([row(r) for r in history if r["experience"] >= 0])


def run_stream(method: Method, stream: Stream, cfg: ContinualConfig, seed: int = 0,
               progress: Callable[[int, float], None] | None = None,
               dist: distributed.DistContext = distributed.SINGLE, run_dir: str | Path | None = None,
               stop_at: int | None = None) -> dict:
    """Train ``method`` (already ``setup`` with a ``TaskMask``-wrapped model) on ``stream`` in the one training loop;
    returns the accuracy matrix and its summaries.

    Under torchrun (``dist``) each process trains on its shard of every global batch inside DDP; rank 0 evaluates.
    ``progress(task_index, mean accuracy over the tasks seen so far)`` is called after each task.
    ``run_dir``: where the loop writes its train/eval logs and checkpoints (none when omitted); ``stop_at``: pause
    at that global step with a checkpoint there (``cfg.resume`` continues from it).
    """
    curriculum = ContinualStream(method, stream, cfg, seed, progress)
    trainer = Trainer(method, curriculum, trainer_config(cfg), run_dir, seed=seed, dist=dist)
    fit = trainer.fit(stop_at=stop_at)
    if fit.steps < trainer.total_steps:
        return {"status": "paused", "step": fit.steps}
    if curriculum.masks_classes:
        method.model.active = None
    if not dist.is_main:  # rank 0 evaluated: the other ranks hold no matrix
        return {"status": "worker"}
    baseline, matrix = accuracy_matrix(fit.history, len(stream.tasks))
    summary = summarise(matrix, baseline) if not cfg.joint else {"average_accuracy": float(matrix[-1].mean())}
    return {"accuracy_matrix": matrix.tolist(), **summary, "train_seconds": fit.train_seconds,
            "per_task_seconds": trainer.stage_seconds, "initial_accuracy": baseline,
            "images_per_second": fit.images_per_second, "resumed_from": trainer.resumed_from}


def _joint(stream: Stream, scenario: str) -> Task:
    """All tasks' training data as one experience, labels already in the scenario's label space."""
    xs = torch.cat([t.train[0] for t in stream.tasks])
    ys = torch.cat([_labels(t, t.train[1], scenario) for t in stream.tasks])
    classes = tuple(sorted({c for t in stream.tasks for c in t.classes}))
    return Task("joint", (xs, ys), (xs[:0], ys[:0]), classes)
