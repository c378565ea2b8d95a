"""The CLI as a user meets it: one-line errors with non-zero exits, `dacl list`, a Hydra multirun."""
import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FAST = ["benchmark=synthetic_shift", "trainer.max_steps=4", "trainer.batch_size=16", "trainer.eval_every=2",
        "trainer.progress=false", "trainer.device=cpu"]


def dacl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dacl", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("dacl: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_wrong_method_name(tmp_path):
    line = _one_line_error(dacl("run", "method=dannn", cwd=tmp_path))
    assert "unknown method 'dannn'" in line and "Did you mean 'dann'?" in line and "source_only" in line


def test_missing_data_root(tmp_path):
    line = _one_line_error(dacl("run", "benchmark=mnist_usps", f"data_root={tmp_path / 'nowhere'}", *FAST[1:], cwd=tmp_path))
    assert "does not exist" in line and "data_root" in line
    assert not list(tmp_path.rglob("results.json"))


def test_corrupt_npz(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.npz").write_bytes(b"PK\x03\x04 this is not a real zip archive")
    np.savez(tmp_path / "data" / "usps.npz", x_train=np.zeros((4, 16, 16), np.uint8), y_train=np.zeros(4),
             x_test=np.zeros((4, 16, 16), np.uint8), y_test=np.zeros(4))
    line = _one_line_error(dacl("run", "benchmark=mnist_usps", f"data_root={tmp_path / 'data'}", *FAST[1:], cwd=tmp_path))
    assert "corrupt" in line and "mnist.npz" in line
    # a run that never started leaves no run folder (not even a failed.json to mistake for a failed training run)
    assert not (tmp_path / "runs").exists()


def test_config_mistakes_deep_in_the_library_are_one_line_errors(tmp_path):
    """A bad value caught inside a model or method (not by a registry lookup) still reaches the user as one line."""
    line = _one_line_error(dacl("run", "model=cnn32", *FAST, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "cnn32 expects 32x32 inputs, got image_size=28" in line and "resize" in line
    assert not list(tmp_path.rglob("results.json"))
    line = _one_line_error(dacl("continual", "stream=split_mnist", "stream.dataset=mnist_5k", "strategy=replay",
                                "strategy.plugins.0.buffer=bogus", f"hydra.run.dir={tmp_path / 'cl'}", cwd=tmp_path))
    assert "replay buffer 'bogus' unknown" in line and "reservoir" in line


def test_list_and_unknown_command(tmp_path):
    out = dacl("list", cwd=tmp_path)
    assert out.returncode == 0 and "dann" in out.stdout and "linear_probe" in out.stdout and "mnist_usps" in out.stdout
    assert "measurements" in out.stdout and "train_throughput" in out.stdout and "feature_analysis" in out.stdout
    assert "unknown command 'rnu'" in _one_line_error(dacl("rnu", cwd=tmp_path))


def test_multirun_sweeps_seeds_and_methods(tmp_path):
    proc = dacl("run", "-m", "seed=0,1", "method=source_only,dann", "tag=t", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(p.relative_to(tmp_path / "runs" / "t").parent.as_posix() for p in (tmp_path / "runs" / "t").rglob("results.json"))
    # result-changing overrides name a sub-folder (so a smoke run never overwrites a full one); paths/progress do not
    cfg = "trainer.batch_size=16,trainer.eval_every=2,trainer.max_steps=4"
    assert found == [f"synthetic_shift/dann/{cfg}/seed0", f"synthetic_shift/dann/{cfg}/seed1",
                     f"synthetic_shift/source_only/{cfg}/seed0", f"synthetic_shift/source_only/{cfg}/seed1"]
    res = json.loads((tmp_path / f"runs/t/synthetic_shift/dann/{cfg}/seed1/results.json").read_text())
    assert res["seed"] == 1 and res["method"] == "dann" and "seed=1" in res["command"]
    assert (tmp_path / f"runs/t/synthetic_shift/dann/{cfg}/seed1/.hydra/config.yaml").exists()


def test_sweep_trials_and_config_overrides_never_share_a_folder(tmp_path):
    proc = dacl("run", "-m", "method=source_only", "hparams_seed=0,1", "trainer.lr=0.01,0.02", "tag=t", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = {p.parent for p in (tmp_path / "runs" / "t").rglob("results.json")}
    assert len(dirs) == 4
    assert {d.parent.parent.name for d in dirs} == {"source_only", "source_only_hp1"}


@pytest.mark.slow
def test_test_time_methods_run_through_dacl_run(tmp_path):
    """`dacl run method=<tta>` trains the source model in the loop, then the method adapts it on the target test
    batches; results.json reports both. On this shift every method must beat its unadapted source model (a method
    whose adapt() only predicts would tie it)."""
    import pytest

    for method in ("tent", "bn_adapt", "shot_im"):
        out = tmp_path / method
        proc = dacl("run", f"method={method}", "benchmark=synthetic_shift", "trainer.max_steps=50",
                    "trainer.progress=false", "trainer.device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        res = json.loads((out / "results.json").read_text())
        tta = res["metrics"]["test_time_adaptation"]
        assert res["kind"] == "tta" and res["method"] == method and tta["protocol"] == "episodic_domain"
        assert res["metrics"]["target_test_acc"]["last"] == tta["target_test_acc"]
        assert tta["source_target_test_acc"] == pytest.approx(res["metrics"]["source_model_target_test_acc"]["last"])
        assert tta["target_test_acc"] > tta["source_target_test_acc"] + 0.05, (method, tta)
        assert f"adapted={tta['target_test_acc']:.4f}" in proc.stdout
    proc = dacl("run", "method=tent", "benchmark=synthetic_shift", "model=lenet", "model.bottleneck_dim=0",
                "trainer.max_steps=2", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'nobn'}", cwd=tmp_path)
    assert "adapts BatchNorm layers but the model has none" in _one_line_error(proc)


def test_misspelt_keys_and_the_other_commands_groups_are_one_line(tmp_path):
    line = _one_line_error(dacl("run", "trainer.lrr=0.1", cwd=tmp_path))
    assert "unknown option 'trainer.lrr'. Did you mean 'trainer.lr'?" in line and "dacl run --cfg job" in line
    assert "'ewc' is a strategy option: `dacl run strategy=ewc stream=split_mnist`" in _one_line_error(
        dacl("run", "method=ewc", cwd=tmp_path))
    assert "dacl run method=..." in _one_line_error(dacl("continual", "method=dann", cwd=tmp_path))
    assert not (tmp_path / "runs").exists()


def test_dacl_run_trains_a_continual_strategy_with_the_trainer_section(tmp_path):
    """One command for every kind of method: a strategy override composes the continual config, whose loop options
    live under trainer.* as a DA run's do."""
    proc = dacl("run", "stream=split_mnist", "stream.dataset=mnist_5k", "strategy=replay", "trainer.steps_per_task=5",
                "trainer.threads=1", f"hydra.run.dir={tmp_path / 'cl'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "cl" / "results.json").read_text())
    assert res["kind"] == "continual" and res["status"] == "ok" and res["command"].startswith("dacl run stream=")
    assert res["config"]["trainer"]["steps_per_task"] == 5 and "train" not in res["config"]
    assert len(res["metrics"]["accuracy_matrix"]) == 5
