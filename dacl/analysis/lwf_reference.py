"""An independent LwF on Permuted MNIST domain-IL, written from the authors' training step (GMvandeVen/
continual-learning, train_a_batch) as a measurement (``measurement=lwf_reference``): a plain-PyTorch loop that
shares none of dacl's training code, only the MNIST arrays, so a matrix that follows dacl's ``lwf`` strategy puts a
gap to the paper on the protocol, not on the plugin.

The loop: a 2 x 1,000 ReLU MLP, Adam (lr 1e-4, its state kept across tasks), batch 128 drawn from reshuffled
epochs, ``steps`` per task; on task t (1-based) the loss (1/t) CE + (1 - 1/t) T^2 CE(softmax(teacher/T),
softmax(student/T)) with T = 2, the teacher being the model as it was when the task began. ``pad32`` and
``permute_all`` switch to the authors' inputs (MNIST padded to 32 x 32, task 0 permuted too); the defaults are
dacl's earlier inputs (28 x 28, task 0 unpermuted). ``distill=false`` drops the teacher term (plain sequential
fine-tuning), the control that shows what the distillation keeps.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dacl.studies.measure import measurement

DEFAULTS = {"dataset": "mnist", "tasks": 10, "steps": 5000, "batch": 128, "lr": 1e-4, "temperature": 2.0,
            "pad32": False, "permute_all": False, "distill": True}


def _describe(m: dict[str, Any]) -> str:
    return f"average accuracy after the last task {m['average_accuracy']:.2f}"


@measurement("lwf_reference", DEFAULTS, _describe)
def lwf_reference(c: dict[str, Any]) -> dict[str, Any]:
    """Accuracy matrix of an independent plain-PyTorch LwF (the authors' training step) on Permuted MNIST domain-IL."""
    import dacl.data  # noqa: F401  (registers the datasets)
    from dacl.registry import DATASETS

    torch.manual_seed(int(c["seed"]))
    d = DATASETS.get(str(c["dataset"]))(data_root=c["data_root"])
    xtr = torch.as_tensor(d.x_train, dtype=torch.float32) / 255.0
    xte = torch.as_tensor(d.x_test, dtype=torch.float32) / 255.0
    if c["pad32"]:
        xtr, xte = F.pad(xtr, (2, 2, 2, 2)), F.pad(xte, (2, 2, 2, 2))
    xtr, xte = xtr.flatten(1), xte.flatten(1)
    ytr, yte = torch.as_tensor(d.y_train).long(), torch.as_tensor(d.y_test).long()
    dim, tasks, batch, temp = xtr.shape[1], int(c["tasks"]), int(c["batch"]), float(c["temperature"])
    gen = torch.Generator().manual_seed(int(c["seed"]))
    perms = [torch.randperm(dim, generator=gen) if (c["permute_all"] or k) else torch.arange(dim) for k in range(tasks)]

    model = nn.Sequential(nn.Linear(dim, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    opt = torch.optim.Adam(model.parameters(), lr=float(c["lr"]), betas=(0.9, 0.999))
    matrix: list[list[float]] = []
    confidence: list[list[float] | None] = []  # the teacher's mean top probability (T = 1, T) on a task's first batch
    start = time.perf_counter()
    for t in range(1, tasks + 1):
        perm = perms[t - 1]
        teacher = copy.deepcopy(model).eval() if t > 1 else None
        order, pos, first = torch.randperm(len(xtr)), 0, None
        model.train()
        for it in range(int(c["steps"])):
            if pos + batch > len(order):  # drop_last, then a new shuffled epoch
                order, pos = torch.randperm(len(xtr)), 0
            idx = order[pos:pos + batch]
            pos += batch
            x, y = xtr[idx][:, perm], ytr[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            if teacher is not None and c["distill"]:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                if it == 0:
                    first = [F.softmax(teacher_logits / s, 1).max(1).values.mean().item() for s in (1.0, temp)]
                distill = -(F.softmax(teacher_logits / temp, 1) * F.log_softmax(out / temp, 1)).sum(1).mean() * temp ** 2
                loss = loss / t + (1 - 1 / t) * distill
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            matrix.append([(model(xte[:, perms[j]]).argmax(1) == yte).float().mean().item() * 100 for j in range(tasks)])
        confidence.append(first)
    return {"accuracy_matrix": matrix, "average_accuracy": sum(matrix[-1]) / tasks,
            "diagonal": [matrix[k][k] for k in range(tasks)], "teacher_confidence": confidence,
            "train_seconds": time.perf_counter() - start}
