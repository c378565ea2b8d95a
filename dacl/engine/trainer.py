"""The one training loop every method runs in.

Iteration-based (DA papers count iterations, not epochs); data are device tensors sampled by
``BatchStream``; the method fills named loss terms and hooks stack on top; evaluation every N steps
records what each validator would select; checkpoints capture everything needed for a bit-exact resume.
"""
from __future__ import annotations

import csv
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dacl import distributed
from dacl.benchmarks.domain_pair import DomainPair
from dacl.data.stream import BatchStream
from dacl.distributed import SINGLE, DistContext
from dacl.engine.checkpoint import load_checkpoint_file, restore_rng_state, rng_state, with_format
from dacl.engine.results import atomic_torch_save
from dacl.errors import ConfigError, NonFiniteLossError
from dacl.methods.base import Batch, Experience, Hooks, Method, StepState
from dacl.metrics import accuracy, expected_calibration_error, predict_in_batches
from dacl.registry import OPTIMIZERS, SCHEDULES, VALIDATORS
from dacl.validators import EvalContext

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

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "TrainerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"unknown trainer option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**cfg)


# TrainerConfig fields that cannot change what a run learns or reports: two runs differing only in these are the
# same configuration (the collector groups them, a TTA source run is reused across them).
RUNTIME_OPTIONS = frozenset({"threads", "progress", "resume", "device", "tensorboard"})


def resolve_device(name: str) -> torch.device:
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
    """Append-only CSV whose columns are fixed by the first row; truncated to a step on resume."""

    def __init__(self, path: Path) -> None:
        self.path, self.columns = path, None

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
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
        self.path.unlink(missing_ok=True)
        self.columns = None

    def write(self, row: dict[str, Any]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = list(row.keys())
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


class Trainer:
    def __init__(self, method: Method, data: DomainPair, cfg: TrainerConfig, run_dir: str | Path, seed: int = 0,
                 dist: DistContext = SINGLE) -> None:
        self.method, self.data, self.cfg, self.seed, self.dist = method, data, cfg, seed, dist
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = data.source_train[0].device
        if cfg.channels_last:
            method.to(memory_format=torch.channels_last)  # conv weights; activations follow them
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.validators = {name: VALIDATORS.get(name) for name in cfg.validators}
        self.needs_target = method.needs_target or any(p.needs_target for p in method.plugins)

        groups = method.param_groups()
        opt_kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.optimizer = OPTIMIZERS.get(cfg.optimizer)(groups, **opt_kwargs)
        lr_lambda = SCHEDULES.get(cfg.schedule)(max_steps=cfg.max_steps, **cfg.schedule_kwargs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        # only hooks that override after_backward cost an unscale (e.g. A-GEM's gradient projection)
        self._grad_hooks = [h for h in method.hooks if type(h).after_backward is not Hooks.after_backward]

        tbs = cfg.target_batch_size or cfg.batch_size  # global batch sizes: under DDP each rank takes its shard
        self.source_stream = BatchStream(len(data.source_train[1]), cfg.batch_size, seed * 1000 + 1, self.device,
                                         shard=dist.shard(cfg.batch_size) if dist.enabled else None)
        self.target_stream = BatchStream(len(data.target_train_x), tbs, seed * 1000 + 2, self.device,
                                         shard=dist.shard(tbs) if dist.enabled else None) if self.needs_target else None
        self.images_per_step = cfg.batch_size + (tbs if self.needs_target else 0)
        # training_step + before_backward hooks -> total loss; inside DDP under torchrun (backward all-reduces)
        self._step_fn = distributed.wrap(method, dist) if dist.enabled else distributed.StepModule(method)

        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_log = _CsvLog(self.run_dir / "train_log.csv")
        self.eval_log = _CsvLog(self.run_dir / "eval_log.csv")
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.tb = self._tensorboard() if cfg.tensorboard and dist.is_main else None

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return with_format({
            "step": self.step, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "source_stream": self.source_stream.state_dict(),
            "target_stream": self.target_stream.state_dict() if self.target_stream else None,
            "rng": rng_state(), "history": self.history, "train_seconds": self.train_seconds, "max_steps": self.cfg.max_steps,
        })

    def save_checkpoint(self) -> None:
        if not self.dist.is_main:  # ranks hold identical state: one file
            return
        atomic_torch_save(self.state_dict(), self.checkpoint_path)

    def load_checkpoint(self, path: Path) -> None:
        ckpt = load_checkpoint_file(path, self.device)
        if ckpt["max_steps"] != self.cfg.max_steps:
            raise ConfigError(f"checkpoint {path} was made with max_steps={ckpt['max_steps']}, this run has "
                              f"{self.cfg.max_steps}; resume with the same config or start a new run directory")
        self.method.load_state_dict(ckpt["method"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.source_stream.load_state_dict(ckpt["source_stream"])
        if self.target_stream is not None:
            self.target_stream.load_state_dict(ckpt["target_stream"])
        restore_rng_state(ckpt["rng"])
        self.step, self.history, self.train_seconds = ckpt["step"], ckpt["history"], ckpt["train_seconds"]
        if self.dist.is_main:
            self.train_log.truncate_after(self.step)
            self.eval_log.truncate_after(self.step)
        log.info("resumed from %s at step %d", path, self.step)

    # --- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.method.eval()
        pred = lambda x: predict_in_batches(self.method.predict, x, self.cfg.eval_batch_size, self.amp_dtype)  # noqa: E731
        d = self.data
        val_logits, tgt_logits = pred(d.source_val[0]), pred(d.target_test[0])
        ctx = EvalContext(val_logits, d.source_val[1], tgt_logits, None, feature_fn=self._feature_fn())
        rec = {"step": self.step,
               "source_val_acc": accuracy(val_logits, d.source_val[1]),
               "source_test_acc": accuracy(pred(d.source_test[0]), d.source_test[1]),
               "target_test_acc": accuracy(tgt_logits, d.target_test[1]),
               "target_test_ece": expected_calibration_error(tgt_logits, d.target_test[1])}
        for name, fn in self.validators.items():  # target labels reach only validators that declare them (the oracle)
            labelled = getattr(fn, "uses_target_labels", False)
            seen = EvalContext(**{**vars(ctx), "target_labels": d.target_test[1]}) if labelled else ctx
            rec[f"score/{name}"] = float(fn(seen))
        self.method.train()
        return rec

    def _feature_fn(self):
        """Lazy, cached bottleneck features for validators that need them (DEV); subsampled to 2,048 rows."""
        cache: dict[str, torch.Tensor] = {}
        g = torch.Generator().manual_seed(0)
        sources = {"source_train": self.data.source_train[0], "source_val": self.data.source_val[0],
                   "target": self.data.target_train_x}

        def features(split: str) -> torch.Tensor:
            if split not in cache:
                x = sources[split]
                if split != "source_val" and len(x) > 2048:
                    x = x[torch.randperm(len(x), generator=g)[:2048].to(x.device)]
                cache[split] = predict_in_batches(self.method.model.features, x, self.cfg.eval_batch_size, self.amp_dtype)
            return cache[split]

        return features

    def select(self) -> dict[str, dict[str, float]]:
        """For each protocol, the eval record it picks: 'last', each validator's argmax, and 'oracle'."""
        if not self.history:
            return {}
        picks: dict[str, dict[str, float]] = {"last": self.history[-1]}
        for name in self.validators:
            picks[name] = max(self.history, key=lambda r: r[f"score/{name}"])  # first best on ties
        picks["oracle"] = max(self.history, key=lambda r: r["target_test_acc"])
        return picks

    # --- training ---------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> FitResult:
        """Train to ``max_steps`` (or pause at ``stop_at``, checkpointing, for resumption)."""
        cfg, method = self.cfg, self.method
        if cfg.resume and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
        elif self.step == 0 and self.dist.is_main:  # a fresh start must not append to a killed run's logs
            self.train_log.reset()
            self.eval_log.reset()
        end = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps
        method.train()
        if self.step == 0:
            for h in method.hooks:
                h.before_experience(Experience(0, self.data.task, data=self.data.source_train))

        xs, ys = self.data.source_train
        xt = self.data.target_train_x
        bar = _progress(self.step, cfg.max_steps, enabled=cfg.progress, desc=f"{method.registry_name} {self.data.task}")
        t0 = time.perf_counter()
        for step in range(self.step, end):
            idx = self.source_stream.next_indices()
            batch = Batch(xs[idx], ys[idx], xt[self.target_stream.next_indices()] if self.target_stream else None, index=idx)
            state = StepState(step, cfg.max_steps, batch)
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

            last = self.step == cfg.max_steps
            if self.step % cfg.log_every == 0 or last or self.step == end:
                self._log_train(state, loss, bar)
            if (self.step % cfg.eval_every == 0 or last) and self.dist.is_main:  # other ranks wait at the next all-reduce
                self.train_seconds += _elapsed(t0, self.device)
                self._record_eval(self.evaluate())
                t0 = time.perf_counter()
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not last:
                self.save_checkpoint()
        self.train_seconds += _elapsed(t0, self.device)  # time since the last evaluation
        bar.close()

        if self.step < cfg.max_steps:  # paused: leave a checkpoint to resume from
            self.save_checkpoint()
        else:
            for h in method.hooks:
                h.after_experience(Experience(0, self.data.task, data=self.data.source_train))
                h.end_training()
            if cfg.save_model and self.dist.is_main:
                atomic_torch_save(method.model.state_dict(), self.run_dir / "model.pt")
            if cfg.ckpt_every:
                self.save_checkpoint()
        if self.tb is not None:
            self.tb.close()
        steps_timed = max(1, self.step)
        return FitResult(self.history, self.select(), self.step, self.train_seconds,
                         steps_timed * self.images_per_step / max(self.train_seconds, 1e-9))

    def _log_train(self, state: StepState, loss: torch.Tensor, bar: Any) -> None:
        values = {k: float(v.detach().float().item()) for k, v in state.losses.items()}
        total = float(loss.detach().item())
        if not math.isfinite(total):
            raise NonFiniteLossError(
                f"loss became {total} at step {self.step} (terms: {values}); lower trainer.lr "
                f"(now {self.cfg.lr}), set trainer.grad_clip=1.0, or check the inputs for NaNs")
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


def _elapsed(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _progress(start: int, total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar on interactive terminals; logs and CI get the periodic eval lines instead."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, disable=not enabled or not sys.stderr.isatty(), leave=False,
                dynamic_ncols=True, file=sys.stderr)

