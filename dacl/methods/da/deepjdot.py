"""DeepJDOT (Damodaran et al., ECCV 2018): joint distribution optimal transport on each minibatch.

The ground cost between source example i and target example j mixes feature distance and how badly
target j's prediction fits source label y_i: C_ij = alpha ||f_i - f_j||^2 + lambda_t CE(y_i, p_j).
The plan gamma comes from POT (exact EMD, or entropic Sinkhorn) on a cost computed in inference mode, as the
authors' code does (``model.predict`` before each update: no dropout, BatchNorm's running statistics); the
network then minimises <gamma, C> on its training forward, which pulls target features towards, and their
predictions to the labels of, the source examples they are transported to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dacl.errors import ConfigError
from dacl.methods.base import StepState
from dacl.methods.da.common import AlignmentMethod, DomainOutputs
from dacl.registry import METHODS


LABEL_COSTS = ("ce", "sqeuclidean")


def label_cost(labels_s: Tensor, logits_t: Tensor, kind: str = "ce") -> Tensor:
    """n_s x n_t: how badly target j's prediction fits source label y_i. ``ce``: -log p_j(y_i) (the paper's loss);
    ``sqeuclidean``: ||onehot(y_i) - p_j||^2 = 1 - 2 p_j(y_i) + ||p_j||^2, which the authors' code uses to
    compute the plan (bounded, so one confident mistake cannot dominate the coupling)."""
    if kind == "ce":
        return -F.log_softmax(logits_t.float(), dim=1).T[labels_s]  # row i: -log p_j(y_i) for every j
    if kind == "sqeuclidean":
        p = F.softmax(logits_t.float(), dim=1)
        return 1 - 2 * p.T[labels_s] + p.pow(2).sum(1).unsqueeze(0)
    raise ConfigError(f"unknown DeepJDOT label cost '{kind}'; use one of {', '.join(LABEL_COSTS)}")


def feature_cost(feats_s: Tensor, feats_t: Tensor) -> Tensor:
    """||f_s_i - f_t_j||^2  (n_s x n_t)."""
    return torch.cdist(feats_s.float(), feats_t.float()).pow(2)


def jdot_cost(feats_s: Tensor, labels_s: Tensor, feats_t: Tensor, logits_t: Tensor,
              alpha: float, lambda_t: float, label: str = "ce") -> Tensor:
    """C_ij = alpha ||f_s_i - f_t_j||^2 + lambda_t label_cost(y_s_i, p_t_j)  (n_s x n_t)."""
    return alpha * feature_cost(feats_s, feats_t) + lambda_t * label_cost(labels_s, logits_t, label)


def transport_plan(cost: Tensor, solver: str = "emd", reg: float = 0.1) -> Tensor:
    """Optimal plan between uniform marginals for a (detached) cost matrix, via POT."""
    import ot  # POT; imported lazily (~1-2 s) so `dacl list` and other methods stay fast

    n_s, n_t = cost.shape
    a = torch.full((n_s,), 1.0 / n_s, dtype=torch.float64, device=cost.device)
    b = torch.full((n_t,), 1.0 / n_t, dtype=torch.float64, device=cost.device)
    m = cost.detach().double()
    if solver == "emd":
        return ot.emd(a, b, m).to(cost.dtype)
    if solver == "sinkhorn":  # log-domain: stable for small reg; reg is relative to the largest cost
        return ot.sinkhorn(a, b, m / m.max().clamp_min(1e-12), reg, method="sinkhorn_log").to(cost.dtype)
    raise ConfigError(f"unknown OT solver '{solver}'; use 'emd' (exact) or 'sinkhorn' (entropic)")


@METHODS.register("deepjdot")
class DeepJDOT(AlignmentMethod):
    """Source cross-entropy + trade_off x <gamma, C> with the joint feature/label cost above."""

    loss_name = "jdot"
    defaults = {  # the authors' released digits recipe (configs/method/deepjdot.yaml cites it)
        "trade_off": 1.0,
        "alpha": 0.001,     # feature-distance weight (jdot_alpha)
        "lambda_t": 0.0001,  # target label-cost weight (tloss)
        "solver": "emd",    # emd (exact, CPU network simplex) | sinkhorn (entropic, runs on the device)
        "reg": 0.01,        # entropic regularisation, relative to the largest cost (sinkhorn only)
        "plan_label_cost": "sqeuclidean",  # ce | sqeuclidean (theirs: plan on ||onehot - p||^2, loss with CE)
        "plan_forward": "eval",  # eval (theirs: a separate inference-mode forward) | train (reuse the training one)
        "warmup_steps": 0,  # source-only steps before the OT term
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        if self.hparams["plan_forward"] not in ("eval", "train"):
            raise ConfigError(f"deepjdot.plan_forward must be 'eval' or 'train', got '{self.hparams['plan_forward']}'")

    def _plan_outputs(self, out: DomainOutputs, state: StepState) -> tuple[Tensor, Tensor, Tensor]:
        """Source features, target features and target logits the plan is computed on."""
        if self.hparams["plan_forward"] == "train":
            return out.feats_s, out.feats_t, out.logits_t
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits, feats = self.model.forward_with_features(torch.cat([state.batch.x, state.batch.x_target]))
        self.model.train(was)
        n_s = state.batch.x.shape[0]
        return feats[:n_s], feats[n_s:], logits[n_s:]

    def alignment_loss(self, out: DomainOutputs, state: StepState) -> Tensor:
        hp = self.hparams
        if state.step < hp["warmup_steps"]:
            return out.feats_s.new_zeros(())
        y = state.batch.y
        cost = hp["alpha"] * feature_cost(out.feats_s, out.feats_t) + hp["lambda_t"] * label_cost(y, out.logits_t)
        feats_s, feats_t, logits_t = self._plan_outputs(out, state)
        plan_cost = (hp["alpha"] * feature_cost(feats_s, feats_t)
                     + hp["lambda_t"] * label_cost(y, logits_t, hp["plan_label_cost"]))
        gamma = transport_plan(plan_cost.detach(), hp["solver"], hp["reg"])
        return (gamma * cost).sum()
