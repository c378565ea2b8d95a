"""Full fine-tuning with the transfer-learning toolbox: layer-wise LR decay (discriminative learning rates),
gradual unfreezing from the top (ULMFiT, one layer group per stage) and BatchNorm handling options.
Warm-up + cosine is the trainer's ``schedule=cosine`` with ``schedule_kwargs.warmup_steps``.

Layer groups run bottom to top: the backbone's stages (a ViT's embedding, each block, the final norm; a CNN's
top-level layers; a BERT's embeddings and each encoder layer), then the bottleneck, then the head.
"""
from __future__ import annotations

from torch import nn

from baselines.common import FineTuneMethod
from dacl.errors import ConfigError
from dacl.methods.base import StepState
from dacl.registry import METHODS

BN_MODES = ("train", "freeze_stats", "freeze")
_EXPAND = ("blocks", "layer", "layers", "features", "net")  # containers whose children are the stages


def _stages(module: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter lists, bottom to top, one per stage; a module's own direct parameters join its first stage."""
    own = list(module.parameters(recurse=False))
    children = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
    if not children:
        return [own] if own else []
    stages: list[list[nn.Parameter]] = []
    for name, child in children:
        if name in _EXPAND or (len(children) == 1 and not own) or isinstance(child, nn.ModuleList):
            stages += _stages(child)
        else:
            stages.append(list(child.parameters()))
    if own:
        stages[0] = own + stages[0]
    return stages


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    groups = _stages(model.backbone)
    bottleneck = list(model.bottleneck.parameters())
    return groups + ([bottleneck] if bottleneck else []) + [list(model.head.parameters())]


@METHODS.register("full_finetune")
class FullFineTune(FineTuneMethod):
    """Every weight trains; optional LLRD, gradual unfreezing and BN modes (baselines package, via entry point)."""

    defaults = {"checkpoint": None, "layer_decay": 1.0, "unfreeze_every": 0, "bn": "train"}

    def setup(self, model, num_classes: int) -> None:
        super().setup(model, num_classes)
        if self.hparams["bn"] not in BN_MODES:
            raise ConfigError(f"full_finetune bn='{self.hparams['bn']}' unknown; choose one of {', '.join(BN_MODES)}")
        self.groups = layer_groups(model)
        self._unfrozen = None
        if self.hparams["unfreeze_every"]:
            self._set_unfrozen(1)
        if self.hparams["bn"] == "freeze":
            for m in self._batch_norms():
                m.requires_grad_(False)

    def _batch_norms(self) -> list[nn.Module]:
        return [m for m in self.model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _set_unfrozen(self, n_top: int) -> None:
        """Only the top ``n_top`` layer groups get gradients."""
        n_top = min(n_top, len(self.groups))
        if n_top == self._unfrozen:
            return
        for i, params in enumerate(self.groups):
            for p in params:
                p.requires_grad_(i >= len(self.groups) - n_top)
        if self.hparams["bn"] == "freeze":
            for m in self._batch_norms():
                m.requires_grad_(False)
        self._unfrozen = n_top

    def param_groups(self) -> list[dict]:
        """One optimizer group per layer group, lr x decay^(distance from the head); frozen groups included."""
        decay, n = float(self.hparams["layer_decay"]), len(self.groups)
        return [{"params": params, "lr_mult": decay ** (n - 1 - i), "include_frozen": bool(self.hparams["unfreeze_every"])}
                for i, params in enumerate(self.groups)]

    def train(self, mode: bool = True) -> "FullFineTune":
        super().train(mode)
        if mode and self.hparams["bn"] != "train":
            for m in self._batch_norms():
                m.eval()
        return self

    def training_step(self, state: StepState) -> None:
        if self.hparams["unfreeze_every"]:
            self._set_unfrozen(1 + state.step // int(self.hparams["unfreeze_every"]))
        super().training_step(state)
