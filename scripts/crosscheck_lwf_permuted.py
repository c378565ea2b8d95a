#!/usr/bin/env python
"""Cross-check of dacl's LwF on Permuted MNIST domain-IL with a plain-PyTorch loop that shares none of dacl's code
except the MNIST arrays.

    python scripts/crosscheck_lwf_permuted.py --data-root ../shared/data --tasks 5 --steps 5000
    python scripts/crosscheck_lwf_permuted.py --data-root ../shared/data --tasks 10 --steps 5000 --pad32 --permute-all

Why: dacl's LwF reaches 34.24 on Permuted MNIST domain-IL where van de Ven & Tolias (2019) report 72.64. This
loop is written from the authors' train_a_batch (GMvandeVen/continual-learning): a 2 x 1,000 ReLU MLP, Adam
(lr 1e-4, state kept across tasks), batch 128 drawn from a reshuffled epoch, 5,000 steps per task, and on task t
(1-based) the loss (1/t) CE + (1 - 1/t) T^2 CE(softmax(teacher/T), softmax(student/T)) with T = 2, the teacher
being the model as it was when the task began. If its accuracy matrix matches dacl's, the gap is the protocol's,
not the plugin's. `--pad32 --permute-all` switch to the authors' inputs (MNIST padded to 32 x 32, every task
permuted, task 0 included); the default is dacl's (28 x 28, task 0 unpermuted).
It prints one accuracy-matrix row per task, with the teacher's mean top probability (T = 1 and T = 2) on the
new task's first batch, and writes the matrix to --out as JSON. One CPU thread: ~2-3 min per task.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacl.engine.results import atomic_write_text  # noqa: E402
from dacl.registry import DATASETS  # noqa: E402
import dacl.data  # noqa: E402,F401  (registers the datasets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--pad32", action="store_true", help="pad MNIST to 32 x 32 as the authors do")
    ap.add_argument("--permute-all", action="store_true", help="permute task 0 too, as the authors do")
    ap.add_argument("--out", default=None, help="JSON file for the accuracy matrix (default: print only)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = DATASETS.get("mnist")(data_root=a.data_root, download=False)
    xtr = torch.as_tensor(d.x_train, dtype=torch.float32) / 255.0
    xte = torch.as_tensor(d.x_test, dtype=torch.float32) / 255.0
    if a.pad32:
        xtr, xte = F.pad(xtr, (2, 2, 2, 2)), F.pad(xte, (2, 2, 2, 2))
    xtr, xte = xtr.flatten(1), xte.flatten(1)
    ytr, yte = torch.as_tensor(d.y_train).long(), torch.as_tensor(d.y_test).long()
    dim = xtr.shape[1]
    gen = torch.Generator().manual_seed(0)
    perms = [torch.randperm(dim, generator=gen) if (a.permute_all or k) else torch.arange(dim) for k in range(a.tasks)]

    model = nn.Sequential(nn.Linear(dim, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    matrix = []
    for t in range(1, a.tasks + 1):
        perm = perms[t - 1]
        teacher = copy.deepcopy(model).eval() if t > 1 else None
        order, pos = torch.randperm(len(xtr)), 0
        start, confidence = time.time(), []
        for it in range(a.steps):
            if pos + 128 > len(order):  # drop_last, then a new shuffled epoch
                order, pos = torch.randperm(len(xtr)), 0
            idx = order[pos:pos + 128]
            pos += 128
            x, y = xtr[idx][:, perm], ytr[idx]
            model.train()
            out = model(x)
            ce = F.cross_entropy(out, y)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                if it == 0:
                    confidence = [F.softmax(teacher_logits / temp, 1).max(1).values.mean().item() for temp in (1, 2)]
                kd = -(F.softmax(teacher_logits / 2, 1) * F.log_softmax(out / 2, 1)).sum(1).mean() * 4
                loss = ce / t + (1 - 1 / t) * kd
            else:
                loss = ce
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            row = [(model(xte[:, perms[j]]).argmax(1) == yte).float().mean().item() * 100 for j in range(a.tasks)]
        matrix.append(row)
        conf = "" if not confidence else f", teacher top-prob on the new task T1 {confidence[0]:.2f} T2 {confidence[1]:.2f}"
        print(f"after task {t - 1} ({time.time() - start:.0f} s{conf}): " + " ".join(f"{v:5.1f}" for v in row),
              flush=True)
    print(f"average accuracy after the last task: {sum(matrix[-1]) / a.tasks:.2f}")
    if a.out:
        atomic_write_text(Path(a.out), json.dumps({"args": vars(a), "accuracy_matrix": matrix}, indent=1))


if __name__ == "__main__":
    main()
