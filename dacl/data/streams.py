"""Continual-learning streams: a sequence of tasks, each with its own train/test tensors and class set.

Split (5 tasks x 2 classes), Permuted (fixed pixel permutations; optionally zero-padded first, task 0 the
identity unless ``permute_first``) and Rotated (fixed angles) streams follow van de Ven & Tolias 2019;
``digit_domains`` is the DA-flavoured sequence MNIST -> USPS -> MNIST-M. Everything is built once as device tensors.
Scenario handling (task-, domain-, class-incremental) lives in the CL loop, not here: a stream only
says which classes each task holds. Permuted/Rotated tasks get disjoint label ranges (task k: 10k..10k+9)
so class-IL means "which digit of which task" as in the paper; domain-IL maps them back to 0..9.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.data.transforms import to_tensor_images
from dacl.registry import DATASETS, STREAMS


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
    """uint8 (N,H,W) or (N,H,W,C) -> float (N,C,H,W) in [0,1] (the MLP setting of van de Ven & Tolias: no
    normalisation)."""
    t = torch.as_tensor(x, dtype=torch.float32, device=device)
    return (t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()) / 255.0


def split_stream(x_train, y_train, x_test, y_test, classes_per_task: int = 2, name: str = "split",
                 device="cpu", class_order_seed: int | None = None) -> Stream:
    """Consecutive classes form a task ((0,1), (2,3), ...), or, with ``class_order_seed``, a seeded shuffle of them:
    the authors' code (van de Ven & Tolias) draws a new digit-to-task assignment for every run seed but 0.
    Within a task, domain-IL's label is the class's position in the (possibly shuffled) group."""
    classes = sorted(set(int(c) for c in np.unique(y_train)))
    if class_order_seed is not None:
        classes = [classes[i] for i in np.random.RandomState(class_order_seed).permutation(len(classes))]
    groups = [tuple(classes[i:i + classes_per_task]) for i in range(0, len(classes), classes_per_task)]
    xtr, xte = _images(x_train, device), _images(x_test, device)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    tasks = []
    for k, group in enumerate(groups):
        g = torch.tensor(group, device=device)
        mtr, mte = torch.isin(ytr, g), torch.isin(yte, g)
        tasks.append(Task(f"{name}{k}:{'/'.join(map(str, group))}", (xtr[mtr], ytr[mtr]), (xte[mte], yte[mte]), group))
    return Stream(name, tasks, len(classes))


def _offset(y: Tensor, k: int, n_classes: int, offset_labels: bool) -> Tensor:
    return y + k * n_classes if offset_labels else y


def permuted_stream(x_train, y_train, x_test, y_test, n_tasks: int = 10, seed: int = 0, device="cpu",
                    offset_labels: bool = True, pad: int = 0, permute_first: bool = False) -> Stream:
    """``pad`` zero-pads each side before permuting and ``permute_first`` permutes task 0 too: the authors' code
    (van de Ven & Tolias) uses pad=2 (28 -> 32 px) and permutes every task; dacl's default keeps 28 x 28 with an
    unpermuted task 0. With padding, two tasks' ink pixels land on fewer common inputs (784 of 1,024 positions)."""
    xtr, xte = _images(x_train, device), _images(x_test, device)
    if pad:
        xtr, xte = F.pad(xtr, (pad,) * 4), F.pad(xte, (pad,) * 4)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    n_pix = xtr[0].numel()
    gen = torch.Generator().manual_seed(seed)
    c = int(ytr.max()) + 1
    tasks = []
    for k in range(n_tasks):
        perm = torch.randperm(n_pix, generator=gen) if k > 0 or permute_first else torch.arange(n_pix)
        p = lambda x: x.flatten(1)[:, perm.to(device)].view_as(x)  # noqa: E731
        o = k * c if offset_labels else 0
        tasks.append(Task(f"permuted{k}", (p(xtr), ytr + o), (p(xte), yte + o), tuple(range(o, o + c))))
    return Stream("permuted", tasks, c * n_tasks if offset_labels else c)


def rotated_stream(x_train, y_train, x_test, y_test, n_tasks: int = 5, max_degrees: float = 180.0, device="cpu",
                   offset_labels: bool = True) -> Stream:
    xtr, xte = _images(x_train, device), _images(x_test, device)
    ytr, yte = torch.as_tensor(y_train, device=device), torch.as_tensor(y_test, device=device)
    c = int(ytr.max()) + 1

    def rotate(x: Tensor, degrees: float) -> Tensor:
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    angles = [max_degrees * k / max(1, n_tasks - 1) for k in range(n_tasks)]
    tasks = []
    for k, a in enumerate(angles):
        o = k * c if offset_labels else 0
        tasks.append(Task(f"rotated{a:.0f}", (rotate(xtr, a), ytr + o), (rotate(xte, a), yte + o), tuple(range(o, o + c))))
    return Stream("rotated", tasks, c * n_tasks if offset_labels else c)


def domain_stream(domains: list, image_size: int = 32, channels: int = 3, device="cpu") -> Stream:
    """One task per domain (DomainArrays), all resized to a common shape; same classes in every task."""
    tasks = []
    for d in domains:
        img = lambda x: to_tensor_images(x, image_size, channels, (0.0,) * channels, (1.0,) * channels, device)  # noqa: E731
        lab = lambda y: torch.as_tensor(y, dtype=torch.long, device=device)  # noqa: E731
        classes = tuple(sorted(int(c) for c in np.unique(d.y_train)))
        tasks.append(Task(d.name, (img(d.x_train), lab(d.y_train)), (img(d.x_test), lab(d.y_test)), classes))
    return Stream("->".join(d.name for d in domains), tasks, len(tasks[0].classes))


# --- registered streams: what ``dacl continual stream=<name>`` builds --------------------------------------------
def _arrays(dataset: str, data_root: str | None, download: bool):
    d = DATASETS.get(dataset)(data_root=data_root, download=download)
    return d.x_train, d.y_train, d.x_test, d.y_test


@STREAMS.register("split_mnist")
def split_mnist(data_root: str | None = None, download: bool = False, device="cpu", dataset: str = "mnist",
                classes_per_task: int = 2, class_order_seed: int | None = None) -> Stream:
    """Split MNIST: 5 tasks of 2 digits (``dataset=mnist_5k`` or ``uci_digits`` runs offline); digits in order
    unless ``class_order_seed`` shuffles them."""
    return split_stream(*_arrays(dataset, data_root, download), classes_per_task, f"split_{dataset}", device,
                        class_order_seed=class_order_seed)


@STREAMS.register("permuted_mnist")
def permuted_mnist(data_root: str | None = None, download: bool = False, device="cpu", dataset: str = "mnist",
                   n_tasks: int = 10, permutation_seed: int = 0, pad: int = 0, permute_first: bool = False) -> Stream:
    """Permuted MNIST: fixed pixel permutations per task (task 0 unpermuted unless ``permute_first``); labels offset
    per task. configs/stream/permuted_mnist.yaml sets pad=2, permute_first=true: the authors' 32 x 32 input."""
    return permuted_stream(*_arrays(dataset, data_root, download), n_tasks, permutation_seed, device,
                           pad=pad, permute_first=permute_first)


@STREAMS.register("rotated_mnist")
def rotated_mnist(data_root: str | None = None, download: bool = False, device="cpu", dataset: str = "mnist",
                  n_tasks: int = 5, max_degrees: float = 180.0) -> Stream:
    """Rotated MNIST: the same digits at n_tasks evenly spaced angles in [0, max_degrees]."""
    return rotated_stream(*_arrays(dataset, data_root, download), n_tasks, max_degrees, device)


@STREAMS.register("digit_domains")
def digit_domains(data_root: str | None = None, download: bool = False, device="cpu",
                  domains: tuple[str, ...] = ("mnist", "usps", "mnist_m"), image_size: int = 32, channels: int = 3) -> Stream:
    """The DA-flavoured domain-incremental stream: MNIST -> USPS -> MNIST-M (32x32 RGB)."""
    return domain_stream([DATASETS.get(d)(data_root=data_root, download=download) for d in domains],
                         image_size, channels, device)


@STREAMS.register("split_cifar10")
def split_cifar10(data_root: str | None = None, download: bool = False, device="cpu", dataset: str = "cifar10",
                  classes_per_task: int = 2, class_order_seed: int | None = None) -> Stream:
    """Split CIFAR-10 (mammoth's seq-cifar10): 5 tasks of 2 classes, 32 x 32 RGB."""
    return split_stream(*_arrays(dataset, data_root, download), classes_per_task, "split_cifar10", device,
                        class_order_seed=class_order_seed)


@STREAMS.register("split_cifar100")
def split_cifar100(data_root: str | None = None, download: bool = False, device="cpu", dataset: str = "cifar100",
                   classes_per_task: int = 10, class_order_seed: int | None = None) -> Stream:
    """Split CIFAR-100: 10 tasks of 10 classes (mammoth's seq-cifar100)."""
    return split_stream(*_arrays(dataset, data_root, download), classes_per_task, "split_cifar100", device,
                        class_order_seed=class_order_seed)


@STREAMS.register("seq_tinyimagenet")
def seq_tinyimagenet(data_root: str | None = None, download: bool = False, device="cpu",
                     dataset: str = "tiny_imagenet", classes_per_task: int = 20,
                     class_order_seed: int | None = None) -> Stream:
    """Seq-TinyImageNet (mammoth's seq-tinyimg): 10 tasks of 20 classes, 64 x 64 RGB."""
    return split_stream(*_arrays(dataset, data_root, download), classes_per_task, "seq_tinyimagenet", device,
                        class_order_seed=class_order_seed)
