"""dacl against avalanche-lib on exactly the same continual stream: the same tensors (dacl's Split MNIST), MLP and
initial weights (built after the same seed), optimizer (Adam; its state kept across experiences, avalanche-lib 0.6's
default, or reset per experience in both), epochs, batch size and evaluator (dacl's accuracy matrix on the same test
tensors). Only the training loop and the strategy's implementation differ. Throughput counts stream images per second
of each framework's own train call. One measurement = one framework x strategy x seed (``measurement=
avalanche_comparison``); ``configs/study/avalanche_split_mnist_class.yaml`` sweeps them.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from dacl.engine.continual import ContinualConfig, TaskMask, _accuracy, _labels, run_stream
from dacl.engine.trainer import seed_everything
from dacl.metrics.continual import summarise
from dacl.models.classifier import build_classifier
from dacl.registry import METHODS, PLUGINS, STREAMS
from dacl.studies.measure import measurement

DEFAULTS = {"framework": "dacl", "strategy": "naive", "stream": "split_mnist", "dataset": "mnist", "epochs": 2,
            "batch_size": 128, "lr": 1e-3, "hidden": [400, 400], "ewc_lambda": 5000.0, "lwf_alpha": 1.0,
            "mem_size": 2000, "optimizer_state": "keep"}
DACL_ONLY = {"replay_eb"}  # dacl's replay with Avalanche's buffer policy: read against Avalanche's "replay"


def make_model(stream, seed: int, hidden: list[int]) -> torch.nn.Module:
    seed_everything(seed)
    x0 = stream.tasks[0].train[0]
    return build_classifier("mlp", stream.num_classes, x0.shape[1], x0.shape[-1], bottleneck_dim=0, hidden=tuple(hidden))


def evaluate(model: torch.nn.Module, stream) -> list[float]:
    return [_accuracy(model, t.test[0], _labels(t, t.test[1], "class"), 4096) for t in stream.tasks]


def run_dacl(c: dict[str, Any], stream) -> dict[str, Any]:
    seed = c["seed"]
    plugins = {"naive": [], "ewc": [("ewc", {"weight": c["ewc_lambda"], "fisher": "empirical", "fisher_samples": 10**6})],
               "lwf": [("lwf", {"weight": c["lwf_alpha"], "temperature": 2.0})],
               "replay": [("replay", {"memory_size": c["mem_size"], "batch_size": c["batch_size"], "seed": seed})],
               "replay_eb": [("replay", {"memory_size": c["mem_size"], "batch_size": c["batch_size"], "seed": seed,
                                         "buffer": "experience_balanced"})]}[c["strategy"]]
    model = TaskMask(make_model(stream, seed, c["hidden"]))
    method = METHODS.build("source_only")
    method.setup(model, stream.num_classes)
    for name, kw in plugins:
        method.add_plugin(PLUGINS.build(name, **kw))
    cfg = ContinualConfig(scenario="class", epochs_per_task=c["epochs"], batch_size=c["batch_size"], optimizer="adamw",
                          lr=c["lr"], mask_unseen_classes=False, reset_optimizer=c["optimizer_state"] == "reset")
    res = run_stream(method, stream, cfg, seed=seed)
    return {"matrix": res["accuracy_matrix"], "train_seconds": res["train_seconds"],
            "images": res["images_per_second"] * res["train_seconds"]}


def run_avalanche(c: dict[str, Any], stream) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import \
        create_generic_benchmark_from_tensor_lists
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, LwF, Naive, Replay

    bench = create_generic_benchmark_from_tensor_lists(
        train_tensors=[[t.train[0].cpu(), t.train[1].cpu()] for t in stream.tasks],
        test_tensors=[[t.test[0].cpu(), t.test[1].cpu()] for t in stream.tasks], task_labels=[0] * len(stream.tasks))
    model = make_model(stream, c["seed"], c["hidden"])
    optimizer = torch.optim.Adam(model.parameters(), lr=c["lr"])

    class ResetOptimizerState(SupervisedPlugin):
        """Fresh Adam moments at every experience, like dacl's ``reset_optimizer`` (Avalanche keeps them by default)."""

        def before_training_exp(self, strategy, **kwargs):
            strategy.make_optimizer(reset_optimizer_state=True)

    plugins = [ResetOptimizerState()] if c["optimizer_state"] == "reset" else []
    common = dict(plugins=plugins, model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                  train_mb_size=c["batch_size"], train_epochs=c["epochs"], eval_mb_size=4096, device="cpu",
                  evaluator=EvaluationPlugin(loggers=[]))
    strat = {"naive": lambda: Naive(**common), "ewc": lambda: EWC(ewc_lambda=c["ewc_lambda"], mode="separate", **common),
             "lwf": lambda: LwF(alpha=c["lwf_alpha"], temperature=2.0, **common),
             "replay": lambda: Replay(mem_size=c["mem_size"], **common)}[c["strategy"]]()
    torch.manual_seed(c["seed"])
    matrix, seconds, images = [], 0.0, 0
    for exp in bench.train_stream:
        t0 = time.perf_counter()
        strat.train(exp, num_workers=0)
        seconds += time.perf_counter() - t0
        images += c["epochs"] * len(exp.dataset)
        matrix.append(evaluate(model, stream))
    return {"matrix": matrix, "train_seconds": seconds, "images": images}


def _describe(m: dict[str, Any]) -> str:
    return (f"acc {100 * m['average_accuracy']:.2f} forgetting {100 * m['forgetting']:.2f} "
            f"{m['images_per_second']:.0f} img/s")


@measurement("avalanche_comparison", DEFAULTS, _describe)
def avalanche_comparison(c: dict[str, Any]) -> dict[str, Any]:
    """One framework x strategy x seed on the shared stream: accuracy matrix, summary and stream images/s."""
    runners = {"dacl": run_dacl, "avalanche": run_avalanche}
    if c["framework"] not in runners or (c["framework"] == "avalanche" and c["strategy"] in DACL_ONLY):
        from dacl.errors import ConfigError

        raise ConfigError(f"framework={c['framework']!r} strategy={c['strategy']!r}: frameworks are dacl and avalanche; "
                          f"{', '.join(sorted(DACL_ONLY))} is dacl only")
    stream = STREAMS.get(c["stream"])(data_root=c["data_root"], dataset=c["dataset"])
    out = runners[c["framework"]](c, stream)
    if c["framework"] == "avalanche":
        import avalanche

        out["avalanche_version"] = avalanche.__version__
    return {**out, **summarise(out["matrix"]), "images_per_second": out["images"] / out["train_seconds"]}
