"""Training throughput of a method through the real Trainer (images/s over source + target images, warm-up steps
excluded), as a measurement (``measurement=train_throughput``) so a throughput table is archived and re-made like
any other; ``configs/study/throughput_cpu.yaml`` sweeps the methods on one machine, one at a time."""
from __future__ import annotations

import tempfile
from typing import Any

from dacl.engine.trainer import Trainer, TrainerConfig, resolve_device, seed_everything
from dacl.experiment import build_benchmark, build_method, count_params, peak_memory_mb
from dacl.studies.measure import measurement

DEFAULTS = {"method": "source_only", "benchmark": "mnist_usps", "model": "lenet", "bottleneck_dim": 256,
            "batch_size": 128, "steps": 100, "warmup": 10, "device": "auto", "amp": "auto",
            "benchmark_options": {}, "model_options": {}}


@measurement("train_throughput", DEFAULTS, lambda m: f"{m['images_per_second']:.0f} img/s, {m['ms_per_step']:.1f} ms/step")
def train_throughput(c: dict[str, Any]) -> dict[str, Any]:
    """Images per second and milliseconds per step of ``steps`` training steps after ``warmup`` (not timed)."""
    device = resolve_device(str(c["device"]))
    data = build_benchmark({"benchmark": {"name": c["benchmark"], **(c["benchmark_options"] or {})},
                            "data_root": c["data_root"]}, device)
    seed_everything(int(c["seed"]))
    method = build_method({"method": {"name": c["method"]}, "model": {"backbone": c["model"], "bottleneck_dim": c["bottleneck_dim"],
                                                                      **(c["model_options"] or {})}}, data)
    method = method.to(device)
    steps, warmup = int(c["steps"]), int(c["warmup"])
    tcfg = TrainerConfig(max_steps=warmup + steps, batch_size=int(c["batch_size"]), eval_every=10**9, log_every=10**9,
                         progress=False, save_model=False, device=str(device), amp=str(c["amp"]))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(method, data, tcfg, tmp)
        trainer.fit(stop_at=warmup)  # warm-up (allocator, kernels); its checkpoint is discarded
        before = trainer.train_seconds
        trainer.fit()
        seconds = trainer.train_seconds - before
    return {"images_per_step": trainer.images_per_step, "ms_per_step": 1000 * seconds / steps,
            "images_per_second": trainer.images_per_step * steps / seconds, "device": device.type, "task": data.task,
            "trainable_params": count_params(method.model)["trainable"],
            "peak_rss_mb": peak_memory_mb(device)["host_peak_rss"]}
