import json

import pytest
import torch

from dacl.engine.trainer import resolve_amp
from dacl.errors import ConfigError
from dacl.metrics import accuracy, expected_calibration_error
from dacl.reporting import aggregate, load_runs, sweep_command, to_csv


def test_accuracy_and_ece_known_values():
    labels = torch.tensor([0, 1, 1, 0])
    confident_right = torch.tensor([[20.0, 0], [0, 20.0], [0, 20.0], [20.0, 0]])
    assert accuracy(confident_right, labels) == 1.0
    assert expected_calibration_error(confident_right, labels) == pytest.approx(0.0, abs=1e-6)
    # confidence 0.9 on every prediction, half of them right -> |0.9 - 0.5| = 0.4
    p = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]))
    assert accuracy(p, torch.tensor([0, 1, 1, 0])) == 0.5
    assert expected_calibration_error(p, torch.tensor([0, 1, 1, 0])) == pytest.approx(0.4, abs=1e-5)


def test_amp_modes():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_amp("half", cpu)


def _run(root, method, seed, last, sel, status="ok", variant=None):
    d = root / (method + (variant or "")) / f"seed{seed}"
    d.mkdir(parents=True)
    res = {"status": status, "benchmark": "b", "task": "s->t", "method": method, "seed": seed, "variant": variant,
           "command": f"dacl run method={method} seed={seed} data_root=x",
           "metrics": {"target_test_acc": {"last": last, "source_val": sel, "oracle": max(last, sel)}}}
    (d / "results.json").write_text(json.dumps(res))


def test_collector_means_stds_and_failures(tmp_path):
    _run(tmp_path, "dann", 0, 0.90, 0.92)
    _run(tmp_path, "dann", 1, 0.80, 0.84)
    _run(tmp_path, "src", 0, 0.70, 0.70)
    crashed = tmp_path / "dann" / "seed2"
    crashed.mkdir()
    (crashed / "failed.json").write_text(json.dumps({"status": "failed", "error": "NonFiniteLossError: nan"}))
    partial = tmp_path / "src" / "seed1"
    partial.mkdir()
    (partial / "results.json").write_text('{"status": "ok", "benchm')  # truncated by a crash
    ok, failed = load_runs([tmp_path])
    assert len(ok) == 3 and {f["run_dir"] for f in failed} == {str(crashed), str(partial)}
    rows = {(r["method"], r["selection"]): r for r in aggregate(ok, {"b": {"dann": 77.1}})}
    assert rows[("dann", "last")]["mean"] == pytest.approx(85.0) and rows[("dann", "last")]["std"] == pytest.approx(7.0711, 1e-4)
    assert rows[("dann", "source_val")]["mean"] == pytest.approx(88.0) and rows[("dann", "source_val")]["n_seeds"] == 2
    assert rows[("dann", "last")]["paper_value"] == 77.1 and rows[("src", "last")]["paper_value"] is None
    assert rows[("dann", "last")]["command"] == "dacl run -m method=dann seed=0,1 data_root=x"
    header = to_csv(list(rows.values())).splitlines()[0]
    assert header == "benchmark,task,method,selection,metric,mean,std,n_seeds,paper_value,command"
    _run(tmp_path / "v", "dann", 0, 0.6, 0.6, variant="tllib_grl")
    rows = {(r["method"], r["selection"]): r for r in aggregate(load_runs([tmp_path])[0], {"b": {"dann": 77.1}})}
    assert rows[("dann [tllib_grl]", "last")]["mean"] == pytest.approx(60.0), "variants are kept apart"
    assert rows[("dann [tllib_grl]", "last")]["paper_value"] == 77.1 and rows[("dann", "last")]["n_seeds"] == 2
    _run(tmp_path / "dup", "dann", 0, 0.5, 0.5)
    with pytest.raises(ValueError, match="duplicate seeds"):
        aggregate(load_runs([tmp_path])[0])


def test_sweep_command_single_seed_is_not_multirun():
    assert sweep_command(["dacl run method=a seed=3"], [3]) == "dacl run method=a seed=3"
