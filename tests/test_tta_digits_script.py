"""reproduce_tta_digits: a seed recorded in the committed table is reused, so a fresh clone adds seeds only."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tta(monkeypatch):
    spec = importlib.util.spec_from_file_location("reproduce_tta_digits_under_test", REPO / "scripts" / "reproduce_tta_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.calls = []

    def fake_adapt(task, seed, args, device, provenance):  # stands in for training a source model and adapting it
        mod.calls.append(seed)
        return {"task": "mnist->mnist_m", "seed": seed, "epochs": args.epochs or 1, "overrides": args.overrides,
                "accuracy": {"source": 0.1 + seed / 100, "shot_im [offline]": 0.949, "shot [offline]": 0.9501}, "source_run": "r", "commit": "c", "dirty": True, "dirty_paths": ["table.md"]}

    monkeypatch.setattr(mod, "adapt_one", fake_adapt)
    return mod


def run(mod, monkeypatch, tmp_path, *argv, task="mnistm"):
    monkeypatch.setattr(sys, "argv", ["x", "--tasks", task, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *argv])
    mod.main()
    return json.loads((tmp_path / "out" / mod.TASKS[task]["out"]).with_suffix(".json").read_text())


def test_committed_seeds_are_reused_and_only_new_ones_run(tta, monkeypatch, tmp_path):
    import shutil

    run(tta, monkeypatch, tmp_path, "--seeds", "0")
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: only the committed table remains
    table = run(tta, monkeypatch, tmp_path, "--seeds", "0,1")
    assert tta.calls == [0, 1], "seed 0 comes from the committed table; only seed 1 is computed"
    assert [r["seed"] for r in table["per_seed"]] == [0, 1]
    md = (tmp_path / "out" / "mnist_mnistm.md").read_text()
    assert "| source | 10.50 ± 0.71 | 2 | 10.00 / 11.00 |" in md
    assert "Commits of the seeds: c (dirty: table.md), c (dirty: table.md)" in md
    run(tta, monkeypatch, tmp_path, "--seeds", "0,1", "--epochs", "2")
    assert tta.calls == [0, 1, 0, 1], "records made with other settings are never reused"
    run(tta, monkeypatch, tmp_path, "--seeds", "0,1", "--epochs", "2", "--force")
    assert tta.calls == [0, 1, 0, 1, 0, 1], "--force recomputes every seed"


def test_goal_line_is_computed_from_the_seeds(tta, monkeypatch, tmp_path):
    run(tta, monkeypatch, tmp_path, "--seeds", "0", "--note", "Seed 0 ran beside another job.", task="usps")
    md = (tmp_path / "out" / "digits.md").read_text()
    assert "\n\nSeed 0 ran beside another job.\n" in md and "--note 'Seed 0 ran beside another job.'" in md
    assert "shot_im [offline] 94.90: missed by 0.10; shot [offline] 95.01: met" in md
