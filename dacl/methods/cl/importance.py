"""Parameter importances for the regularisation plugins: the diagonal Fisher information (EWC) and the fused
quadratic anchor penalty sum_i A_i (p_i - c_i)^2 that EWC and SI share.

The Fisher is estimated from *per-example* gradients of the log-likelihood, never with a Python loop over
examples: for all-Linear networks (the CL MLPs) exactly and cheaply as (delta^2)^T (a^2) per layer, otherwise
with a vmapped ``torch.func`` pass. The label whose log-likelihood is differentiated is the true one
(``empirical``), one sampled from the model (``true``, the Fisher's definition) or the model's argmax
(``predicted``, van de Ven & Tolias' choice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from dacl.errors import ConfigError


FISHER_LABELS = ("empirical", "true", "predicted")


def _labels_for_fisher(model: torch.nn.Module, x: Tensor, y: Tensor, labels: str, gen: torch.Generator) -> Tensor:
    if labels == "empirical":
        return y
    with torch.no_grad():
        probs = F.softmax(model(x).float(), 1)
    return probs.argmax(1) if labels == "predicted" else torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(x.device)


def _linear_only(model: torch.nn.Module) -> bool:
    owners = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    return bool(owners) and all(isinstance(m, torch.nn.Linear) for m in owners)


def _linear_fisher(model: torch.nn.Module, x: Tensor, y: Tensor, labels: str, chunk: int, gen) -> dict[str, Tensor]:
    """Exact per-example squared gradients of Linear layers without materialising them: for y = W a + b the
    per-example gradient is delta a^T, so sum_n (delta_n a_n^T)^2 = (delta^2)^T (a^2) -- one matmul per layer."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    inputs: dict[str, Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: inputs.__setitem__(name, (inp[0].detach(), out)))
               for name, m in linears.items()]
    try:
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk]
            yb = _labels_for_fisher(model, xb, y[start:start + chunk], labels, gen)
            logits = model(xb)
            outs = {name: out for name, (_, out) in inputs.items()}
            loss = F.cross_entropy(logits.float(), yb, reduction="sum")  # sum: each example's own gradient
            grads = torch.autograd.grad(loss, list(outs.values()), allow_unused=True)
            for (name, out), delta in zip(outs.items(), grads):
                if delta is None:
                    continue
                a, m = inputs[name][0], linears[name]
                d2 = delta.reshape(-1, delta.shape[-1]).pow(2)
                if m.weight.requires_grad:
                    fisher[f"{name}.weight"] += d2.T @ a.reshape(-1, a.shape[-1]).pow(2)
                if m.bias is not None and m.bias.requires_grad:
                    fisher[f"{name}.bias"] += d2.sum(0)
    finally:
        for h in handles:
            h.remove()
    return fisher


def per_example_fisher(model: torch.nn.Module, x: Tensor, y: Tensor, labels: str = "empirical",
                       chunk: int = 128, seed: int = 0) -> dict[str, Tensor]:
    """Mean over examples of the squared per-example gradient of log p(label | x), per trainable parameter."""
    if labels not in FISHER_LABELS:
        raise ConfigError(f"EWC fisher '{labels}' unknown; choose one of {', '.join(FISHER_LABELS)}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        if _linear_only(model):
            fisher = _linear_fisher(model, x, y, labels, max(chunk, 1024), gen)
        else:
            fisher = _vmap_fisher(model, x, y, labels, chunk, gen)
    finally:
        model.train(was_training)
    return {n: f / max(1, len(x)) for n, f in fisher.items()}


def _vmap_fisher(model: torch.nn.Module, x: Tensor, y: Tensor, labels: str, chunk: int, gen) -> dict[str, Tensor]:
    """Any architecture: per-example gradients by torch.func.vmap(grad(...)) in chunks."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)).float(), yi.unsqueeze(0))

    per_example_grads = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        yb = _labels_for_fisher(model, xb, y[start:start + chunk], labels, gen)
        for n, g in per_example_grads(params, xb, yb).items():
            fisher[n] += g.pow(2).sum(0)
    return fisher


class QuadraticPenalty(torch.autograd.Function):
    """sum_i A_i (p_i - c_i)^2 over all parameters with fused multi-tensor ops and a hand-written backward
    2 A (p - c): the per-step cost stays a small fraction of a training step."""

    @staticmethod
    def forward(ctx, n: int, *tensors: Tensor) -> Tensor:
        params, importance, centres = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
        diffs = torch._foreach_sub(params, centres)
        weighted = torch._foreach_mul(diffs, importance)
        ctx.save_for_backward(*weighted)
        return torch.stack([(w * d).sum() for w, d in zip(weighted, diffs)]).sum()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grads = torch._foreach_mul(list(ctx.saved_tensors), 2.0 * grad_out)
        return (None, *grads, *([None] * (2 * len(grads))))
