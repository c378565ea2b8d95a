"""The Method contract every DA, TTA, CL and fine-tuning algorithm implements.

A method is an ``nn.Module`` that owns the model it trains plus any modules it adds (e.g. a domain
discriminator), so ``.to(device)``, ``state_dict()`` and checkpoints cover everything at once.

One training step, as the trainer runs it::

    state = StepState(step, max_steps, batch)
    method.training_step(state)            # fills state.losses (and state.outputs)
    for hook in [method, *plugins]:
        hook.before_backward(state)        # plugins add regularizers to state.losses
    sum(state.losses.values()).backward(); optimizer.step()
    for hook in [method, *plugins]:
        hook.after_update(state)

Lifecycle hooks (before/after experience, before_backward, after_update, end_training) live on
``Hooks``, shared by methods and ``Plugin``s, so regularizers stack like Avalanche plugins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class Batch:
    """A training batch. Target *labels* are deliberately absent: DA methods cannot peek at them."""

    x: Tensor  # labelled inputs (source domain / current task)
    y: Tensor
    x_target: Tensor | None = None  # unlabelled target inputs (DA only)
    task_id: int = 0
    index: Tensor | None = None  # rows of the experience's ``data`` this batch holds (lets frozen features be cached)


@dataclass
class StepState:
    """What one step's hooks share: the batch, intermediate outputs and the named loss terms."""

    step: int
    max_steps: int
    batch: Batch
    outputs: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    logs: dict[str, Tensor] = field(default_factory=dict)  # extra scalars to log (not optimised)

    @property
    def progress(self) -> float:
        """Training progress in [0, 1], used by annealing schedules (GRL coefficient, etc.)."""
        return self.step / max(1, self.max_steps)

    def total_loss(self) -> Tensor:
        if not self.losses:
            raise RuntimeError("training_step produced no loss terms")
        return torch.stack([v.float() for v in self.losses.values()]).sum()


@dataclass
class Experience:
    """One stage of training: a DA run has one, a CL stream one per task."""

    index: int = 0
    name: str = "train"
    classes: tuple[int, ...] | None = None
    data: tuple[Tensor, Tensor] | None = None  # the experience's training inputs/labels (EWC's Fisher reads them)
    scenario: str | None = None  # CL only: "task" / "domain" / "class"; ``classes`` are then in the head's label space


def merge_hparams(kind: str, name: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by config; unknown keys are an error so a typo never falls back silently."""
    unknown = set(given) - set(defaults)
    if unknown:
        from dacl.errors import ConfigError

        raise ConfigError(f"{kind} '{name}' got unknown option(s) {sorted(unknown)}; it accepts {sorted(defaults) or 'none'}")
    return {**defaults, **given}


class Hooks:
    """No-op lifecycle hooks; override the ones you need."""

    def before_experience(self, experience: Experience) -> None: ...
    def after_experience(self, experience: Experience) -> None: ...
    def before_backward(self, state: StepState) -> None: ...
    def after_backward(self, state: StepState) -> None: ...  # gradients exist (unscaled), the update has not run
    def after_update(self, state: StepState) -> None: ...
    def end_training(self) -> None: ...


class Method(nn.Module, Hooks):
    """Base class for algorithms. Subclasses implement ``training_step`` and usually nothing else.

    ``defaults`` holds the method's hyper-parameters; config values override them, and unknown keys
    are rejected so a typo never silently falls back to a default.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    needs_target: ClassVar[bool] = False  # True for DA methods that consume unlabelled target batches
    registry_name: ClassVar[str] = "?"
    # A method that adapts an already trained model (test-time adaptation) names the method that trains it:
    # `dacl run` trains that one in the loop, then hands its model to this one on the target test batches.
    source_method: ClassVar[str | None] = None

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = merge_hparams("method", self.registry_name, self.defaults, hparams)
        self.model: nn.Module | None = None
        self.plugins = nn.ModuleList()  # stacked Plugin instances; part of state_dict/checkpoints

    # --- set-up -------------------------------------------------------------------------------
    def setup(self, model: nn.Module, num_classes: int) -> None:
        """Attach the model. Override to add modules sized from it (call super first)."""
        self.model = model
        self.num_classes = num_classes

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; ``lr_mult`` scales the base learning rate per group."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr_mult": 1.0}]

    # --- training -----------------------------------------------------------------------------
    def training_step(self, state: StepState) -> None:
        """Compute the loss terms for ``state.batch`` into ``state.losses``."""
        raise NotImplementedError

    def add_plugin(self, plugin: "Plugin") -> None:
        plugin.attach(self)
        self.plugins.append(plugin)

    @property
    def hooks(self) -> list[Hooks]:
        return [self, *self.plugins]

    # --- inference ----------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        """Logits for evaluation."""
        assert self.model is not None
        return self.model(x)

    def adapt(self, x: Tensor) -> Tensor:
        """Test-time entry: TTA methods adapt on the unlabelled batch ``x`` and return its logits."""
        return self.predict(x)

    def reset(self) -> None:
        """Restore the state before any test-time adaptation (episodic TTA). Default: nothing to undo."""


class GrowingState:
    """Mixin for modules whose state appears while they train, so a checkpoint restores all of it.

    - Buffers registered lazily (EWC's per-parameter importances, a memory allocated on its first example) are
      created from the checkpoint's tensors before loading, so a fresh module accepts them.
    - Plain attributes named in ``resumable_attrs`` (lists of tensors, class tuples, counters) travel in
      ``state_dict`` as PyTorch's ``_extra_state``; they must be tensors, numbers, strings, None, or
      lists/tuples/dicts of those, so checkpoints still load with ``weights_only=True``.
    - A lazily built submodule (LwF's teacher) is created by overriding ``create_missing_modules``.
    Without this, a continual run could not resume mid-stream: the hooks that build this state have already run.
    """

    resumable_attrs: ClassVar[tuple[str, ...]] = ()

    def get_extra_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.resumable_attrs if hasattr(self, name)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def create_missing_modules(self, names: set[str]) -> None:
        """Build the lazily created submodules among ``names`` (found in a checkpoint) so they can be loaded."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        children = {k.split(".", 1)[0] for k in own if "." in k} - set(self._modules)
        if children:
            self.create_missing_modules(children)
        for name, value in own.items():
            grown = "." not in name and name != "_extra_state" and name not in self._parameters
            if grown and self._buffers.get(name) is None:
                self.register_buffer(name, torch.empty_like(value))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class Plugin(GrowingState, nn.Module, Hooks):
    """A stackable add-on (regularizer, replay buffer, ...) attached to any method via ``method.plugins``."""

    defaults: ClassVar[dict[str, Any]] = {}
    needs_target: ClassVar[bool] = False
    registry_name: ClassVar[str] = "?"

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        self.hparams = merge_hparams("plugin", self.registry_name, self.defaults, hparams)
        object.__setattr__(self, "method", None)

    def attach(self, method: Method) -> None:
        # Plain attribute, not a submodule: the method already owns this plugin (avoid a module cycle).
        object.__setattr__(self, "method", method)
