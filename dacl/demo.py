"""The offline demo: source-only vs DANN on package-shipped digits, printed as a small table."""
from __future__ import annotations

import shlex
from pathlib import Path

from dacl.cli import CONFIG_DIR, check_overrides


def run_demo(overrides: list[str], methods: tuple[str, ...] = ("source_only", "dann")) -> list[dict]:
    from hydra import compose, initialize_config_dir

    check_overrides(overrides)
    from dacl.experiment import run_experiment

    results = []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for method in methods:
            ov = ["+experiment=demo", f"method={method}", *overrides]
            cfg = compose("config", overrides=ov)
            run_dir = Path("runs") / cfg.tag / cfg.benchmark.name / method / f"seed{cfg.seed}"
            print(f"training {method} on {cfg.benchmark.name} ({cfg.trainer.max_steps} steps) -> {run_dir}", flush=True)
            results.append(run_experiment(cfg, run_dir, command="dacl run " + " ".join(shlex.quote(o) for o in ov)))

    print()
    print(f"{'method':<12} {'task':<24} {'target acc (source-val sel.)':>29} {'target acc (last)':>18} {'source test acc':>16} {'img/s':>7}")
    for r in results:
        acc = r["metrics"]["target_test_acc"]
        print(f"{r['method']:<12} {r['task']:<24} {100 * acc['source_val']:>28.1f}% {100 * acc['last']:>17.1f}% "
              f"{100 * r['metrics']['source_test_acc']:>15.1f}% {r['train_images_per_second']:>7.0f}")
    return results
