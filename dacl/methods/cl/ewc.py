"""EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018) as a stackable plugin.

After each experience the diagonal Fisher information is estimated from per-example gradients
(``importance.per_example_fisher``; ``fisher: empirical | true | predicted`` picks the label).
The penalty is (lambda/2) sum_k F_k (theta - theta*_k)^2 over past tasks k. Because a sum of quadratics is
one quadratic, offline EWC stores A = sum_k F_k, the centre theta_bar = sum_k F_k theta*_k / A and a constant,
so its per-step cost is that of online EWC whatever the number of tasks (same value and gradient).
Online EWC keeps F <- gamma F + F_new anchored at the latest weights. Everything lives in buffers, so it
survives checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dacl.methods.base import Experience, Plugin, StepState
from dacl.methods.cl.importance import QuadraticPenalty, per_example_fisher
from dacl.registry import PLUGINS


def _key(name: str) -> str:
    return name.replace(".", "__")


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
        total = QuadraticPenalty.apply(len(params), *params, *importance, *centres)
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
