"""EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018) as a stackable plugin.

After each experience the diagonal Fisher information is estimated from *per-example* gradients of the
log-likelihood, never with a Python loop over examples: for all-Linear networks (the CL MLPs) exactly and
cheaply as (delta^2)^T (a^2) per layer, otherwise with a vmapped ``torch.func`` pass. The label whose
log-likelihood is differentiated is the true one (``fisher: empirical``), one sampled from the model
(``true``, the Fisher's definition) or the model's argmax (``predicted``, van de Ven & Tolias' choice).
The penalty is (lambda/2) sum_k F_k (theta - theta*_k)^2 over past tasks k. Because a sum of quadratics is
one quadratic, offline EWC stores A = sum_k F_k, the centre theta_bar = sum_k F_k theta*_k / A and a constant,
so its per-step cost is that of online EWC whatever the number of tasks (same value and gradient).
Online EWC keeps F <- gamma F + F_new anchored at the latest weights. Everything lives in buffers, so it
survives checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from dacl.methods.base import Experience, Plugin, StepState
from dacl.registry import PLUGINS

FISHER_LABELS = ("empirical", "true", "predicted")


def _key(name: str) -> str:
    return name.replace(".", "__")


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
        raise ValueError(f"EWC fisher '{labels}' unknown; choose one of {', '.join(FISHER_LABELS)}")
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


class _QuadraticPenalty(torch.autograd.Function):
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


@PLUGINS.register("ewc")
class EWC(Plugin):
    defaults = {"weight": 100.0, "online": False, "gamma": 1.0, "fisher": "empirical", "fisher_samples": 1024,
                "chunk": 128, "seed": 0, "gradient": "direct"}

    def _params(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.method.model.named_parameters() if p.requires_grad}

    def fisher_diagonal(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        hp = self.hparams
        n = min(len(x), int(hp["fisher_samples"]))
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(hp["seed"]))[:n].to(x.device)
        return per_example_fisher(self.method.model, x[idx], y[idx], hp["fisher"], hp["chunk"], hp["seed"])

    def after_experience(self, experience: Experience) -> None:
        if experience.data is None:
            raise ValueError("EWC needs the experience's data to estimate the Fisher information (Experience.data)")
        fisher = self.fisher_diagonal(*experience.data)
        first = not hasattr(self, "ewc_constant")
        constant = torch.zeros(()) if first else self.ewc_constant
        for name, p in self._params().items():
            k, theta = _key(name), p.detach().clone()
            a_old = torch.zeros_like(theta) if first else getattr(self, f"importance_{k}")
            c_old = theta if first else getattr(self, f"centre_{k}")
            if self.hparams["online"]:  # one running Fisher, anchored at the newest weights
                importance, centre = self.hparams["gamma"] * a_old + fisher[name], theta
            else:  # exact merge of sum_k F_k (x - theta_k)^2 into A (x - centre)^2 + const
                importance = a_old + fisher[name]
                share = torch.where(importance > 0, fisher[name] / importance.clamp_min(1e-30), torch.ones_like(theta))
                centre = c_old + share * (theta - c_old)  # the Fisher-weighted mean of the anchors
                # A(x-c)^2 + F(x-t)^2 = (A+F)(x-m)^2 + A(c-m)^2 + F(t-m)^2: no cancellation, never negative
                const = (a_old * (c_old - centre).pow(2) + fisher[name] * (theta - centre).pow(2)).sum()
                constant = constant + const.cpu()
            self.register_buffer(f"importance_{k}", importance)
            self.register_buffer(f"centre_{k}", centre)
        self.register_buffer("ewc_constant", constant)
        self._pairs = None  # rebuilt lazily (buffers were replaced)

    def _apply(self, fn, *args, **kwargs):  # .to(device) replaces the buffers: drop the cached references
        self._pairs = None
        return super()._apply(fn, *args, **kwargs)

    def _triples(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(parameters, importances, centres), built once per anchoring (buffers replaced -> rebuilt)."""
        if getattr(self, "_pairs", None) is None:
            params = self._params()
            self._pairs = [(p, getattr(self, f"importance_{_key(n)}"), getattr(self, f"centre_{_key(n)}"))
                           for n, p in params.items() if hasattr(self, f"importance_{_key(n)}")]
        return tuple(list(t) for t in zip(*self._pairs))  # type: ignore[return-value]

    def penalty(self) -> Tensor:
        params, importance, centres = self._triples()
        total = _QuadraticPenalty.apply(len(params), *params, *importance, *centres)
        return 0.5 * self.hparams["weight"] * (total + self.ewc_constant.to(total.device))

    def before_backward(self, state: StepState) -> None:
        if hasattr(self, "ewc_constant") and self.hparams["gradient"] == "autograd":
            state.losses["ewc"] = self.penalty()

    def after_backward(self, state: StepState) -> None:
        """``gradient: direct`` (default): add lambda A (theta - c) straight into .grad after the backward pass --
        the same gradient as differentiating the penalty, in about half the memory traffic (no autograd node,
        no separate accumulation). The penalty's value is recorded (detached) for logging."""
        if not hasattr(self, "ewc_constant") or self.hparams["gradient"] != "direct":
            return
        params, importance, centres = self._triples()
        with torch.no_grad():
            diffs = torch._foreach_sub(params, centres)
            weighted = torch._foreach_mul(diffs, importance)
            lam = float(self.hparams["weight"])
            for p, w in zip(params, weighted):
                if p.grad is None:
                    p.grad = lam * w
                else:
                    p.grad.add_(w, alpha=lam)
            value = torch.stack([(w * d).sum() for w, d in zip(weighted, diffs)]).sum()
            state.losses["ewc"] = 0.5 * lam * (value + self.ewc_constant.to(value.device))
