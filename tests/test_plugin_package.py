"""An outside package, installed with pip, adds a DA method and a CL plugin with their own configs: no dacl file
changes, no environment variable, just its entry points (tests/fixtures/outside_pkg)."""
from __future__ import annotations

import pytest
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "outside_pkg"


def _dacl(*args: str, cwd: Path, site: Path | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "dacl", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)


def _column(path: Path, name: str) -> list[float]:
    with path.open() as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


@pytest.mark.slow
def test_an_installed_package_runs_its_own_method_and_plugin_with_its_own_configs(tmp_path):
    source, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(FIXTURE, source)  # build outside the repository
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(source)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]

    before = _dacl("run", "method=mcc", cwd=tmp_path, site=None)  # not installed: an unknown name, one line
    assert before.returncode == 2 and "unknown method 'mcc'" in before.stderr

    listed = _dacl("list", cwd=tmp_path, site=site)
    assert "mcc" in listed.stdout and "l2_anchor" in listed.stdout

    run = _dacl("run", "method=mcc", "benchmark=synthetic_shift", "trainer.max_steps=20", "trainer.log_every=10",
                "trainer.eval_every=10", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'da'}", cwd=tmp_path,
                site=site)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads((tmp_path / "da" / "results.json").read_text())
    assert res["method"] == "mcc" and res["method_hparams"] == {"trade_off": 1.0, "temperature": 2.5}  # its yaml
    assert all(v > 0 for v in _column(tmp_path / "da" / "train_log.csv", "loss/mcc"))

    cl = _dacl("continual", "stream=split_mnist", "stream.dataset=mnist_5k", "scenario=class", "strategy=l2_anchor",
               "trainer.steps_per_task=10", "trainer.log_every=5", f"hydra.run.dir={tmp_path / 'cl'}", cwd=tmp_path,
               site=site)
    assert cl.returncode == 0, cl.stderr[-3000:]
    anchor = _column(tmp_path / "cl" / "train_log.csv", "loss/l2_anchor")
    assert len(anchor) == 8 and all(v > 0 for v in anchor), "the plugin's term on every step after the first task"
    assert json.loads((tmp_path / "cl" / "results.json").read_text())["method"] == "l2_anchor"
