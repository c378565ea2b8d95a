"""The one training loop every method runs in, for every kind of run.

It trains a ``Curriculum`` (dacl.engine.curriculum): a DA run is one experience, a continual stream one per
task. Iteration-based (DA papers count iterations, not epochs); data are device tensors sampled by
``BatchStream``; the method fills named loss terms and hooks stack on top. AMP, schedules, gradient clipping,
DDP, train/eval logs and the non-finite check (made at logging steps only: no per-step host sync) hold for all
kinds; the curriculum decides when and how the model is scored. Checkpoints capture everything needed for a
bit-exact resume and load without unpickling code.
"""
from __future__ import annotations

import csv
import functools
import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dacl import distributed
from dacl.benchmarks.domain_pair import DomainPair
from dacl.data.stream import BatchStream, ClassBalancedStream
from dacl.distributed import SINGLE, DistContext
from dacl.engine.curriculum import Curriculum, DomainAdaptation
from dacl.engine.checkpoint import load_checkpoint_file, restore_rng_state, rng_state, with_format
from dacl.engine import signals
from dacl.engine.results import atomic_torch_save, git_commit
from dacl.engine.signals import RunInterrupted
from dacl.engine.weights import WEIGHTS_FILE, save_weights
from dacl.errors import ConfigError, NonFiniteLossError, check_number
from dacl.methods.base import Batch, Hooks, Method, StepState
from dacl.registry import OPTIMIZERS, SCHEDULES
from dacl.run_spec import RUNTIME_KEYS

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    max_steps: int = 5000
    batch_size: int = 128
    target_batch_size: int | None = None  # defaults to batch_size
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "dann"
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    grad_clip: float | None = None
    eval_every: int = 500
    eval_batch_size: int = 2048
    log_every: int = 50
    ckpt_every: int = 0  # 0: checkpoint only when stopping early or at the end
    resume: bool = False
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    validators: list[str] = field(default_factory=lambda: ["source_val"])
    progress: bool = True
    tensorboard: bool = False
    save_model: bool = True
    threads: int | None = None  # torch intra-op threads on CPU; None keeps torch's default
    channels_last: bool = True  # NHWC conv layout: ~30% faster LeNet steps with oneDNN on CPU, and faster on GPU
    reset_optimizer: bool = False  # multi-experience runs: a fresh optimizer and schedule at every experience
    backbone_lr_mult: float = 1.0  # the backbone's learning rate relative to the rest (0.1 for pre-trained trunks)
    source_batches: str = "uniform"  # uniform (shuffled epochs) | class_balanced (batch_size / classes of each class)

    def __post_init__(self) -> None:
        """Every numeric option's range, checked before any work: a zero batch or step count would otherwise surface
        as a misleading NaN, a KeyError or a ZeroDivisionError deep in the loop."""
        positive = ("max_steps", "batch_size", "eval_every", "log_every", "eval_batch_size")
        for name in positive:
            check_number(f"trainer.{name}", getattr(self, name), integer=True, minimum=1)
        check_number("trainer.target_batch_size", self.target_batch_size, integer=True, minimum=1, optional=True)
        check_number("trainer.threads", self.threads, integer=True, minimum=1, optional=True)
        check_number("trainer.ckpt_every", self.ckpt_every, integer=True, minimum=0)
        check_number("trainer.lr", self.lr, minimum=0.0)
        check_number("trainer.weight_decay", self.weight_decay, minimum=0.0)
        check_number("trainer.momentum", self.momentum, minimum=0.0, below=1.0)
        check_number("trainer.backbone_lr_mult", self.backbone_lr_mult, minimum=0.0)
        check_number("trainer.grad_clip", self.grad_clip, minimum=0.0, exclusive=True, optional=True)
        if self.source_batches not in ("uniform", "class_balanced"):
            raise ConfigError(f"trainer.source_batches must be uniform or class_balanced, got '{self.source_batches}'")
        if self.amp != "auto" and self.amp not in AMP_DTYPES:
            raise ConfigError(f"trainer.amp must be one of auto, {', '.join(AMP_DTYPES)}; got '{self.amp}'")
        check_device_name(self.device)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "TrainerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"unknown trainer option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**cfg)


# TrainerConfig fields that cannot change what a run learns or reports (dacl.run_spec classifies every key): two
# runs differing only in these are the same configuration (the collector groups them, a TTA source run is reused).
RUNTIME_OPTIONS = frozenset(k.split(".", 1)[1] for k in RUNTIME_KEYS["run"] if k.startswith("trainer."))


def _constant_lr(step: int) -> float:
    return 1.0


def check_device_name(name: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or another device torch knows; a typo is a one-line error."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device '{name}'; use trainer.device=auto, cpu, cuda or cuda:N") from exc


def resolve_device(name: str) -> torch.device:
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if mode not in AMP_DTYPES:
        raise ConfigError(f"trainer.amp must be one of auto, {', '.join(AMP_DTYPES)}; got '{mode}'")
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.amp=fp16 needs CUDA (loss scaling); use trainer.amp=bf16 or off on CPU")
    return AMP_DTYPES[mode]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    selected: dict[str, dict[str, float]]
    steps: int
    train_seconds: float
    images_per_second: float


class _CsvLog:
    """Append-only CSV; a row with new columns widens the header (earlier rows leave them empty); truncated to a
    step on resume."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.columns = path, None  # no path: a run that keeps nothing on disk

    def truncate_after(self, step: int) -> None:
        if self.path is None or not self.path.exists():
            return
        with self.path.open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            self.columns = list(rows[0].keys())
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns)
                w.writeheader()
                w.writerows(r for r in rows if int(r["step"]) <= step)

    def reset(self) -> None:
        """Start empty: a fresh run takes its columns from its own first row, not from a killed run's header."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.columns = None

    def write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = list(row.keys())
        elif not new and set(row) - set(self.columns):  # a term that starts later (LwF from the 2nd task): widen
            with self.path.open() as f:
                rows = list(csv.DictReader(f))
            self.columns += [k for k in row if k not in self.columns]
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns)
                w.writeheader()
                w.writerows(rows)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


class Trainer:
    """Runs a ``Curriculum`` (a ``DomainPair`` is wrapped as one DA experience) through the one step loop."""

    def __init__(self, method: Method, data: DomainPair | Curriculum, cfg: TrainerConfig,
                 run_dir: str | Path | None = None, seed: int = 0, dist: DistContext = SINGLE) -> None:
        self.method, self.cfg, self.seed, self.dist = method, cfg, seed, dist
        self.needs_target = method.needs_target or any(p.needs_target for p in method.plugins)
        self.curriculum = data if isinstance(data, Curriculum) else DomainAdaptation(
            data, cfg.batch_size, cfg.target_batch_size, cfg.max_steps, self.needs_target, cfg.validators, seed)
        self.stages = self.curriculum.stages()
        self.stage_starts = [0]
        for st in self.stages:
            self.stage_starts.append(self.stage_starts[-1] + st.steps)
        self.total_steps = self.stage_starts[-1]
        self.run_dir = Path(run_dir) if run_dir is not None else None  # None: nothing on disk (library callers)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = self.stages[0].inputs.device
        if cfg.channels_last:
            method.to(memory_format=torch.channels_last)  # conv weights; activations follow them
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.validators = self.curriculum.validators
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        # only hooks that override after_backward cost an unscale (e.g. A-GEM's gradient projection)
        self._grad_hooks = [h for h in method.hooks if type(h).after_backward is not Hooks.after_backward]
        first = self.stages[0]
        self.images_per_step = first.batch_size + (first.target_batch_size or 0)
        # training_step + before_backward hooks -> total loss; inside DDP under torchrun (backward all-reduces)
        self._step_fn = distributed.wrap(method, dist) if dist.enabled else distributed.StepModule(method)

        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.source_stream: BatchStream | None = None
        self.target_stream: BatchStream | None = None
        self.resumed_from: dict[str, Any] | None = None  # step and commit of the checkpoint this run continued
        self.step = 0  # global: counts the steps of every experience so far
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.stage_seconds: list[float] = []
        self.images_seen = 0
        self.train_log = _CsvLog(self.run_dir / "train_log.csv" if self.run_dir else None)
        self.eval_log = _CsvLog(self.run_dir / "eval_log.csv" if self.run_dir else None)
        self.checkpoint_path = self.run_dir / "checkpoint.pt" if self.run_dir else None
        self.tb = self._tensorboard() if cfg.tensorboard and dist.is_main and self.run_dir else None
        self._open_stage(0)  # optimizer and streams exist from the start (a checkpoint loads into them)

    # --- experiences ------------------------------------------------------------------------------
    def _stage_of(self, step: int) -> int:
        """Index of the experience that global step ``step`` belongs to (the last one once training ended)."""
        return next((k for k in range(len(self.stages)) if step < self.stage_starts[k + 1]), len(self.stages) - 1)

    def _open_stage(self, k: int) -> None:
        """Batch streams of experience ``k``; a fresh optimizer and schedule for the first one, and for every one
        under ``reset_optimizer`` (a CL protocol choice: the authors' code of some papers keeps Adam's state)."""
        st, dist = self.stages[k], self.dist
        shard = dist.shard(st.batch_size) if dist.enabled else None
        source = ClassBalancedStream(st.labels, st.batch_size, st.stream_seed, self.device, shard) \
            if self.cfg.source_batches == "class_balanced" else \
            BatchStream(len(st.labels), st.batch_size, st.stream_seed, self.device, shard=shard)
        self.source_stream = _follow(st.inputs, source)
        self.target_stream = _follow(st.target_inputs, BatchStream(
            len(st.target_inputs), st.target_batch_size, st.stream_seed + 1, self.device,
            shard=dist.shard(st.target_batch_size) if dist.enabled else None)) if st.target_inputs is not None else None
        if self.optimizer is None or (self.cfg.reset_optimizer and k > 0):
            cfg = self.cfg
            opt_kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.nesterov)
            groups = scale_backbone_lr(self.method.param_groups(), self.method.model, cfg.backbone_lr_mult)
            self.optimizer = OPTIMIZERS.get(cfg.optimizer)(groups, **opt_kwargs)
            lr_lambda = SCHEDULES.get(cfg.schedule)(max_steps=st.steps, **cfg.schedule_kwargs)
            # a group may keep its learning rate (thuml/CDAN decays the network's lr, not the discriminator's)
            per_group = [lr_lambda if g.get("scheduled", True) else _constant_lr for g in self.optimizer.param_groups]
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, per_group)
        self._opened = k

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return with_format({
            "step": self.step, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "source_stream": self.source_stream.state_dict(),
            "target_stream": self.target_stream.state_dict() if self.target_stream else None,
            "rng": rng_state(), "history": self.history, "train_seconds": self.train_seconds,
            "stage_seconds": self.stage_seconds, "images_seen": self.images_seen, "max_steps": self.total_steps,
            "opened": self._opened, "written_by": _commit(),
        })

    def save_checkpoint(self) -> None:
        if not self.dist.is_main or self.checkpoint_path is None:  # ranks hold identical state: one file
            return
        atomic_torch_save(self.state_dict(), self.checkpoint_path)

    def load_checkpoint(self, path: Path) -> None:
        ckpt = load_checkpoint_file(path, self.device)
        if ckpt["max_steps"] != self.total_steps:
            raise ConfigError(f"checkpoint {path} was made with max_steps={ckpt['max_steps']}, this run has "
                              f"{self.total_steps}; resume with the same config or start a new run directory")
        if ckpt["opened"] != self._opened:  # the experience whose streams and optimizer the checkpoint holds
            self._open_stage(ckpt["opened"])
        self.method.load_state_dict(ckpt["method"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.source_stream.load_state_dict(ckpt["source_stream"])
        if self.target_stream is not None:
            self.target_stream.load_state_dict(ckpt["target_stream"])
        restore_rng_state(ckpt["rng"])
        self.step, self.history, self.train_seconds = ckpt["step"], ckpt["history"], ckpt["train_seconds"]
        self.stage_seconds, self.images_seen = ckpt["stage_seconds"], ckpt["images_seen"]
        self.resumed_from = {"step": self.step, **ckpt.get("written_by", {})}
        if self.dist.is_main:
            self.train_log.truncate_after(self.step)
            self.eval_log.truncate_after(self.step)
        log.info("resumed from %s at step %d", path, self.step)

    # --- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Score the model as the curriculum defines it (eval mode for the duration)."""
        self.method.eval()
        try:
            return self.curriculum.evaluate(self, self._stage_of(max(0, self.step - 1)))
        finally:
            self.method.train()

    def select(self) -> dict[str, dict[str, float]]:
        return self.curriculum.select(self.history)

    # --- training ---------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> FitResult:
        """Train every experience to its end (or pause at global step ``stop_at``, checkpointing, for resumption)."""
        cfg, method = self.cfg, self.method
        if cfg.resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
        elif self.step == 0 and self.dist.is_main:  # a fresh start must not append to a killed run's logs
            self.train_log.reset()
            self.eval_log.reset()
        end = min(self.total_steps, stop_at) if stop_at is not None else self.total_steps
        if self.step == 0 and not self.history and self.dist.is_main:
            for rec in self.curriculum.initial_records(self):
                self._record_eval(rec)
        method.train()
        bar = _progress(self.step, self.total_steps, enabled=cfg.progress,
                        desc=f"{method.registry_name} {self.curriculum.name}")
        while self.step < end:
            k = self._stage_of(self.step)
            self._train_stage(k, end, bar)
        bar.close()

        if self.step < self.total_steps:  # paused: leave a checkpoint to resume from
            self.save_checkpoint()
        else:
            for h in method.hooks:
                h.end_training()
            if cfg.save_model and self.dist.is_main and self.run_dir is not None:
                save_weights(method.model.state_dict(), self.run_dir / WEIGHTS_FILE)
            if cfg.ckpt_every:
                self.save_checkpoint()
        if self.tb is not None:
            self.tb.close()
        return FitResult(self.history, self.select(), self.step, self.train_seconds,
                         self.images_seen / max(self.train_seconds, 1e-9))

    def _train_stage(self, k: int, end: int, bar: Any) -> None:
        """Steps of experience ``k`` from where the run stands up to ``end``; its hooks at its start and end."""
        cfg, method, st = self.cfg, self.method, self.stages[k]
        first, last_step = self.stage_starts[k], self.stage_starts[k + 1]
        self.curriculum.enter(k)
        fresh = self.step == first
        if fresh:
            if self._opened != k:
                self._open_stage(k)
            self.stage_seconds.append(0.0)
            for h in method.hooks:
                h.before_experience(st.experience)
        xs, ys, xt = st.inputs, st.labels, st.target_inputs
        images = st.batch_size + (st.target_batch_size or 0)
        t0 = time.perf_counter()
        for step in range(self.step, min(end, last_step)):
            idx = self.source_stream.next_indices()
            tgt = xt[self.target_stream.next_indices()] if self.target_stream is not None else None
            state = StepState(step - first, st.steps, Batch(xs[idx], ys[idx], tgt, task_id=st.experience.index, index=idx))
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self._step_fn(state)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip or self._grad_hooks:
                self.scaler.unscale_(self.optimizer)
            for h in self._grad_hooks:
                h.after_backward(state)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for h in method.hooks:
                h.after_update(state)
            self.step = step + 1
            self.images_seen += images

            done = self.step == last_step
            eval_due = self.curriculum.periodic_eval and (self.step % cfg.eval_every == 0 or done)
            if self.step % cfg.log_every == 0 or done or self.step == end:
                self._log_train(state, loss, bar)  # also the non-finite check: no per-step host sync
            elif eval_due:
                self._check_finite(state, loss)  # never score a diverged model (its NaN logits break the metrics)
            if eval_due and self.dist.is_main:
                t0 = self._pause_clock(t0, k)  # other ranks wait at the next all-reduce
                self._record_eval(self.evaluate())
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not done:
                self.save_checkpoint()
            # SIGTERM/SIGINT: stop between two steps. Under torchrun the ranks agree first (at logging steps only: one
            # all-reduce there instead of a host sync every step); alone, the flag is read every step.
            ask = not self.dist.enabled or self.step % cfg.log_every == 0 or self.step == end
            if ask and not done and distributed.any_rank(signals.requested() is not None, self.dist, self.device):
                self._pause_clock(t0, k)
                self.save_checkpoint()
                raise RunInterrupted(signals.requested() or int(signal.SIGTERM), self.step)
        self._pause_clock(t0, k)
        if self.step == last_step:  # a checkpoint at an experience's last step is taken only after its end hooks
            for h in method.hooks:
                h.after_experience(st.experience)
            if not self.curriculum.periodic_eval and self.dist.is_main:
                self._record_eval(self.evaluate())
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step != self.total_steps:
                self.save_checkpoint()

    def _pause_clock(self, t0: float, k: int) -> float:
        """Add the time since ``t0`` to the training time (evaluation is not training); returns a fresh ``t0``."""
        seconds = _elapsed(t0, self.device)
        self.train_seconds += seconds
        self.stage_seconds[k] += seconds
        return time.perf_counter()

    def _check_finite(self, state: StepState, loss: torch.Tensor) -> tuple[float, dict[str, float]]:
        values = {k: float(v.detach().float().item()) for k, v in state.losses.items()}
        total = float(loss.detach().item())
        if not math.isfinite(total):
            raise NonFiniteLossError(
                f"loss became {total} at step {self.step} (terms: {values}); lower trainer.lr "
                f"(now {self.cfg.lr}), set trainer.grad_clip=1.0, or check the inputs for NaNs")
        return total, values

    def _log_train(self, state: StepState, loss: torch.Tensor, bar: Any) -> None:
        total, values = self._check_finite(state, loss)
        row = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "loss": total,
               **{f"loss/{k}": v for k, v in values.items()},
               **{k: float(v.float().item()) for k, v in state.logs.items()}}
        if self.dist.is_main:
            self.train_log.write(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"train/{k}", v, self.step)
        bar.set_postfix({"loss": f"{total:.3f}"}, refresh=False)
        bar.update(self.step - bar.n)

    def _record_eval(self, rec: dict[str, float]) -> None:
        self.history.append(rec)
        self.eval_log.write(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step":
                    self.tb.add_scalar(f"eval/{k}", v, self.step)
        log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "step"))

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("trainer.tensorboard=true needs the tensorboard package: pip install -e '.[tensorboard]'") from exc
        return SummaryWriter(str(self.run_dir / "tb"))


@functools.lru_cache(maxsize=1)
def _follow(inputs: Any, stream: BatchStream) -> Any:
    """The stream the loop draws from: streamed images (``ImageFiles``) decode the drawn batches ahead in workers."""
    follow = getattr(inputs, "follow", None)
    return follow(stream) if follow is not None else stream


def scale_backbone_lr(groups: list[dict[str, Any]], model: Any, mult: float) -> list[dict[str, Any]]:
    """Split every parameter group into its backbone part (learning rate x ``mult``) and the rest: the fine-tuning
    recipes of the field (TLlib's DANN/CDAN on ResNet-50: backbone 0.1x, bottleneck, head and discriminator 1x)."""
    backbone = getattr(model, "backbone", None)
    if mult == 1.0 or backbone is None:
        return groups
    trunk = {id(p) for p in backbone.parameters()}
    out = []
    for g in groups:
        inside = [p for p in g["params"] if id(p) in trunk]
        rest = [p for p in g["params"] if id(p) not in trunk]
        base = g.get("lr_mult", 1.0)
        out += [{**g, "params": inside, "lr_mult": base * mult}] if inside else []
        out += [{**g, "params": rest}] if rest else []
    return out


def _commit() -> dict[str, Any]:
    """The code a checkpoint was written by (asked of git once per process)."""
    info = git_commit()
    return {"commit": info.get("commit"), "dirty": info.get("dirty")}


def _elapsed(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _progress(start: int, total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar on interactive terminals; logs and CI get the periodic eval lines instead."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, disable=not enabled or not sys.stderr.isatty(), leave=False,
                dynamic_ncols=True, file=sys.stderr)

