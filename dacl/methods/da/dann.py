"""DANN (Ganin et al., JMLR 2016): adversarial feature alignment through a gradient-reversal layer.

The feature extractor is trained to classify source data while making source and target features
indistinguishable to a domain discriminator; the GRL turns the discriminator's gradient into the
extractor's confusion objective in a single backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dacl.errors import ConfigError
from dacl.methods.base import Method, StepState
from dacl.methods.da.common import joint_forward
from dacl.models.classifier import DomainDiscriminator, init_weights
from dacl.models.grl import grl_coefficient, reverse_gradient
from dacl.registry import METHODS


@METHODS.register("dann")
class DANN(Method):
    """Domain-adversarial training with a gradient-reversal layer (Ganin et al. 2016)."""

    needs_target = True
    defaults = {
        "trade_off": 1.0,          # weight of the domain loss
        "disc_hidden": 1024,       # discriminator width
        "grl_alpha": 10.0,         # steepness of the GRL warm start
        "grl_warmup_steps": None,  # p = step / grl_warmup_steps; None: p = step / max_steps (Ganin's schedule)
        "grl_max": 1.0,
        "disc_lr_mult": 1.0,
        "disc_layers": 2,          # hidden layers (TLlib: 2 x 1024 with BN; the paper's digits net: 1 x 100)
        "disc_batch_norm": True,
        "disc_input": "bottleneck",  # bottleneck | backbone (the paper's digits net: the flattened conv features)
        "disc_dropout": 0.0,       # dropout after each hidden layer (thuml/CDAN's AdversarialNetwork: 0.5)
        "disc_lr_schedule": True,  # false: the discriminator keeps its lr while the network's follows the schedule
        "adapt_after": 0,          # source-only steps first; the GRL warm start counts from here
        "disc_init": "default",    # default | truncated_normal (tf-dann's N(0, 0.1) weights, 0.1 biases)
    }

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        if self.hparams["disc_input"] not in ("bottleneck", "backbone"):
            raise ConfigError(f"{self.registry_name}.disc_input must be 'bottleneck' or 'backbone', "
                              f"got '{self.hparams['disc_input']}'")
        self.discriminator = DomainDiscriminator(self.discriminator_input_dim(), hidden=self.hparams["disc_hidden"],
                                                 batch_norm=self.hparams["disc_batch_norm"],
                                                 layers=self.hparams["disc_layers"],
                                                 dropout=self.hparams["disc_dropout"])
        init_weights(self.discriminator, self.hparams["disc_init"])

    def discriminator_input_dim(self) -> int:
        if self.hparams["disc_input"] == "backbone":
            return int(self.model.backbone.out_features)
        return self.model.feature_dim

    def param_groups(self):
        return [
            {"params": [p for p in self.model.parameters() if p.requires_grad], "lr_mult": 1.0},
            {"params": list(self.discriminator.parameters()), "lr_mult": self.hparams["disc_lr_mult"],
             "scheduled": self.hparams["disc_lr_schedule"]},
        ]

    def grl_coeff(self, state: StepState) -> float:
        warmup, start = self.hparams["grl_warmup_steps"], self.hparams["adapt_after"]
        progress = (state.step - start) / max(1, (warmup or state.max_steps - start))
        return grl_coefficient(progress, alpha=self.hparams["grl_alpha"], high=self.hparams["grl_max"])

    def domain_loss(self, disc_input: torch.Tensor, n_source: int, state: StepState,
                    weight: torch.Tensor | None = None) -> None:
        """Gradient-reversed discriminator loss on ``disc_input`` (source rows first); shared with CDAN. None during
        the first ``adapt_after`` steps (source-only: the discriminator is not trained either)."""
        if state.step < self.hparams["adapt_after"]:
            return
        coeff = self.grl_coeff(state)
        d_logits = self.discriminator(reverse_gradient(disc_input, coeff))
        d_labels = torch.cat([d_logits.new_ones(n_source), d_logits.new_zeros(disc_input.shape[0] - n_source)])
        state.losses["domain"] = self.hparams["trade_off"] * F.binary_cross_entropy_with_logits(
            d_logits.float(), d_labels, weight=weight)
        with torch.no_grad():
            state.logs["domain_acc"] = ((d_logits > 0).float() == d_labels).float().mean()
            state.logs["grl_coeff"] = torch.tensor(coeff)

    def training_step(self, state: StepState) -> None:
        out = joint_forward(self, state, self.hparams["disc_input"])  # one forward over source+target
        self.domain_loss(state.outputs["features"], out.feats_s.shape[0], state)
