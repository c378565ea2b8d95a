"""Continual-learning streams: a sequence of tasks, each with its own train/test tensors and class set.

Split (5 tasks x 2 classes), Permuted (fixed pixel permutations; task 0 is the identity) and Rotated
(fixed angles) streams follow van de Ven & Tolias 2019; everything is built once as device tensors.
Scenario handling (task-, domain-, class-incremental) lives in the CL loop, not here: a stream only
says which classes each task holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Task:
    name: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    classes: tuple[int, ...]


@dataclass
class Stream:
    name: str
    tasks: list[Task]
    num_classes: int

    def __len__(self) -> int:
        return len(self.tasks)


def _images(x: np.ndarray, device) -> Tensor:
    """uint8 (N,H,W) -> float (N,1,H,W) in [0,1] (the MLP setting of van de Ven & Tolias: no normalisation)."""
    return torch.as_tensor(x, dtype=torch.float32, device=device).unsqueeze(1) / 255.0


def split_stream(x_train, y_train, x_test, y_test, classes_per_task: int = 2, name: str = "split",
                 device="cpu") -> Stream:
    classes = sorted(set(int(c) for c in np.unique(y_train)))
    groups = [tuple(classes[i:i + classes_per_task]) for i in range(0, len(classes), classes_per_task)]
    xtr, xte = _images(x_train, device), _images(x_test, device)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    tasks = []
    for k, group in enumerate(groups):
        g = torch.tensor(group, device=device)
        mtr, mte = torch.isin(ytr, g), torch.isin(yte, g)
        tasks.append(Task(f"{name}{k}:{'/'.join(map(str, group))}", (xtr[mtr], ytr[mtr]), (xte[mte], yte[mte]), group))
    return Stream(name, tasks, len(classes))


def permuted_stream(x_train, y_train, x_test, y_test, n_tasks: int = 10, seed: int = 0, device="cpu") -> Stream:
    xtr, xte = _images(x_train, device), _images(x_test, device)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    n_pix = xtr[0].numel()
    gen = torch.Generator().manual_seed(seed)
    classes = tuple(range(int(ytr.max()) + 1))
    tasks = []
    for k in range(n_tasks):
        perm = torch.arange(n_pix) if k == 0 else torch.randperm(n_pix, generator=gen)
        p = lambda x: x.flatten(1)[:, perm.to(device)].view_as(x)  # noqa: E731
        tasks.append(Task(f"permuted{k}", (p(xtr), ytr), (p(xte), yte), classes))
    return Stream("permuted", tasks, len(classes))


def rotated_stream(x_train, y_train, x_test, y_test, n_tasks: int = 5, max_degrees: float = 180.0, device="cpu") -> Stream:
    xtr, xte = _images(x_train, device), _images(x_test, device)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    classes = tuple(range(int(ytr.max()) + 1))

    def rotate(x: Tensor, degrees: float) -> Tensor:
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    angles = [max_degrees * k / max(1, n_tasks - 1) for k in range(n_tasks)]
    tasks = [Task(f"rotated{a:.0f}", (rotate(xtr, a), ytr), (rotate(xte, a), yte), classes) for a in angles]
    return Stream("rotated", tasks, len(classes))
