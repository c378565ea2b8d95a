"""The battery scripts/gpu_check.sh runs on a lent GPU, run here on the CPU with a few steps so it cannot rot."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu():
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--steps", "4", "--recipe-steps", "1",
                           "--per-class", "2"], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| NO |" not in proc.stdout, proc.stdout
    assert "committed CPU figure" in proc.stdout and "cpu.csv" in proc.stdout, proc.stdout
    assert proc.stdout.count("| yes |") >= 6, proc.stdout


def test_committed_cpu_figure_is_read_from_the_throughput_table(tmp_path):
    from dacl.analysis.gpu_check import CPU_TABLE, committed_cpu_row

    row = committed_cpu_row(CPU_TABLE)
    assert row["images_per_second"] and row["images_per_second"] > 0, row
    missing = committed_cpu_row(tmp_path / "absent.csv")
    assert missing["images_per_second"] is None and missing["note"].startswith("skipped"), missing


def test_gpu_check_composes_from_dacl_config_dir(tmp_path, monkeypatch):
    """DACL_CONFIG_DIR decides where `dacl run` reads configs; the battery composes through the same function."""
    import dacl.analysis.gpu_check as gpu_check

    seen = []
    monkeypatch.setattr("dacl.engine.shared_runs.compose_run_config", lambda o: seen.append(o) or {"x": 1})
    monkeypatch.setattr("dacl.experiment.run_experiment", lambda cfg, folder: {"status": "ok", "cfg": cfg})
    res = gpu_check._run(["method=dann"], tmp_path)
    assert seen == [["method=dann"]] and res["cfg"] == {"x": 1}
