"""Measurement ``feature_analysis``: what adaptation did to a trained model's features and confidence.

It names the run it analyses by that run's ``dacl run`` overrides (``run=[...]``); the run is trained once into a
shared folder (dacl.engine.shared_runs) when no finished one holds it, so a fresh clone re-makes the table without
any run folder. Its record holds the target accuracy, the proxy A-distance between source-test and target-test
features, the target ECE, a reliability curve and a t-SNE embedding: the table and both figures are drawn from it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dacl.analysis.domain import proxy_a_distance, reliability_curve, tsne_embedding
from dacl.errors import ConfigError
from dacl.studies.measure import measurement

DEFAULTS = {"run": [], "runs": None, "per_domain": 1000, "device": "cpu"}


def _describe(m: dict[str, Any]) -> str:
    return f"target acc {m['target_acc']:.2f}%, proxy A-distance {m['proxy_a_distance']:.3f}, ECE {m['target_ece']:.2f}%"


@measurement("feature_analysis", DEFAULTS, _describe)
def feature_analysis(c: dict[str, Any]) -> dict[str, Any]:
    """Train (or find) the run ``c['run']`` names, then measure its final model on both domains' test sets."""
    from dacl.engine.shared_runs import compose_run_config, ensure_shared_run, inherit_runtime, shared_run_dir
    from dacl.engine.trainer import resolve_device, seed_everything
    from dacl.engine.weights import load_weights, run_weights
    from dacl.experiment import build_benchmark, build_method
    from dacl.metrics import accuracy, expected_calibration_error, predict_in_batches

    overrides = [str(o) for o in c["run"] or []]
    if not overrides:
        raise ConfigError("feature_analysis needs the run to analyse: run=['+experiment=usps_mnist','method=dann']")
    parent = {"data_root": c.get("data_root"), "trainer": {"threads": c.get("threads") or 1, "progress": False}}
    config = inherit_runtime(compose_run_config(overrides), parent)
    folder = shared_run_dir(c["runs"] or Path("runs") / "analysed", config)
    ensure_shared_run(config, folder, "dacl run " + " ".join(overrides))
    recorded = json.loads((folder / "results.json").read_text())
    device = resolve_device(str(c["device"]))
    data = build_benchmark(config, device)
    seed_everything(int(config["seed"]))
    method = build_method(config, data).to(device)
    method.model.load_state_dict(load_weights(run_weights(folder)))
    method.eval()
    with torch.no_grad():
        source = predict_in_batches(method.model.features, data.source_test[0])
        target = predict_in_batches(method.model.features, data.target_test[0])
        logits = predict_in_batches(method.model.head, target)
    labels = data.target_test[1]
    return {"run_dir": str(folder), "run_command": recorded.get("command") or "dacl run " + " ".join(overrides),
            "analysed_benchmark": recorded["benchmark"], "analysed_method": recorded["method"], "analysed_task": recorded["task"], "analysed_seed": recorded["seed"],
            "analysed_variant": recorded.get("variant"),
            "target_acc": 100 * accuracy(logits, labels), "proxy_a_distance": proxy_a_distance(source, target),
            "target_ece": 100 * expected_calibration_error(logits, labels),
            "reliability": reliability_curve(logits.cpu(), labels.cpu()),
            "tsne": tsne_embedding(source.cpu(), target.cpu(), labels.cpu(), seed=int(c["seed"]),
                                   per_domain=int(c["per_domain"])),
            "device": str(device)}
