"""EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018) as a stackable plugin.

After each experience the diagonal Fisher information of the model's parameters is estimated on that
experience's data (``fisher: empirical`` uses the true labels, ``true`` samples labels from the model's
own predictive distribution) and the weights are anchored. The penalty (lambda/2) sum_k F_k (theta - theta*_k)^2
keeps important weights near their old values. Online EWC keeps one running Fisher, F <- gamma F + F_new,
and one anchor, so its cost does not grow with the number of tasks. Fisher and anchors are buffers, so
they survive checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.methods.base import Experience, Plugin, StepState
from dacl.registry import PLUGINS


def _key(name: str) -> str:
    return name.replace(".", "__")


@PLUGINS.register("ewc")
class EWC(Plugin):
    defaults = {"weight": 100.0, "online": False, "gamma": 1.0, "fisher": "empirical", "fisher_batches": 32,
                "batch_size": 128}

    def _params(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.method.model.named_parameters() if p.requires_grad}

    def fisher_diagonal(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Mean squared per-batch gradients of the log-likelihood (the usual minibatch approximation)."""
        model, params = self.method.model, self._params()
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()
        bs = self.hparams["batch_size"]
        batches = range(0, min(len(x), bs * self.hparams["fisher_batches"]), bs)
        for start in batches:
            logits = model(x[start:start + bs])
            target = y[start:start + bs] if self.hparams["fisher"] == "empirical" else \
                torch.multinomial(F.softmax(logits.detach().float(), 1), 1).squeeze(1)
            model.zero_grad(set_to_none=True)
            F.cross_entropy(logits.float(), target).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().pow(2) / len(batches)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return fisher

    def after_experience(self, experience: Experience) -> None:
        if experience.data is None:
            raise ValueError("EWC needs the experience's data to estimate the Fisher information (Experience.data)")
        fisher = self.fisher_diagonal(*experience.data)
        task = "online" if self.hparams["online"] else f"t{experience.index}"
        for n, p in self._params().items():
            f_name, a_name = f"fisher_{task}_{_key(n)}", f"anchor_{task}_{_key(n)}"
            if self.hparams["online"] and hasattr(self, f_name):
                fisher[n] = self.hparams["gamma"] * getattr(self, f_name) + fisher[n]
            self.register_buffer(f_name, fisher[n])
            self.register_buffer(a_name, p.detach().clone())

    def penalty(self) -> Tensor:
        params = dict(self.method.model.named_parameters())
        total = torch.zeros((), device=next(iter(params.values())).device)
        for name, fisher in self.named_buffers():
            if name.startswith("fisher_"):
                task, _, param = name[len("fisher_"):].partition("_")
                p = params[param.replace("__", ".")]
                total = total + (fisher * (p - getattr(self, f"anchor_{task}_{param}")).pow(2)).sum()
        return 0.5 * self.hparams["weight"] * total

    def before_backward(self, state: StepState) -> None:
        if any(n.startswith("fisher_") for n, _ in self.named_buffers()):
            state.losses["ewc"] = self.penalty()
