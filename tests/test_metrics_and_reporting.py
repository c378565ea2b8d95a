import json
from pathlib import Path

import pytest
import torch

from dacl.engine.trainer import resolve_amp
from dacl.errors import ConfigError
from dacl.metrics import accuracy, expected_calibration_error
from dacl.reporting import (aggregate, archive_runs, format_mean_std, load_runs, mean_std, peft_shape_misses, sweep_command,
                            to_csv, to_markdown)

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    d.mkdir(parents=True, exist_ok=True)
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
    assert header == "benchmark,task,method,selection,metric,mean,std,n_seeds,paper_value,command,n_failed"
    _run(tmp_path / "v", "dann", 0, 0.6, 0.6, variant="tllib_grl")
    rows = {(r["method"], r["selection"]): r for r in aggregate(load_runs([tmp_path])[0], {"b": {"dann": 77.1}})}
    assert rows[("dann [tllib_grl]", "last")]["mean"] == pytest.approx(60.0), "variants are kept apart"
    assert rows[("dann [tllib_grl]", "last")]["paper_value"] == 77.1 and rows[("dann", "last")]["n_seeds"] == 2
    _run(tmp_path / "dup", "dann", 0, 0.5, 0.5)
    with pytest.raises(ValueError, match="duplicate seeds"):
        aggregate(load_runs([tmp_path])[0])


def test_one_seed_shows_its_value_alone_never_a_measured_zero_spread(tmp_path):
    """A single run measures no spread: the DA tables must not print '± 0.00' (nor write 0.00 to the CSV) for it,
    while two identical seeds do show a measured 0.00."""
    assert mean_std([0.5]) == (0.5, None) and format_mean_std(*mean_std([77.0])) == "77.00"
    assert format_mean_std(*mean_std([80.0, 80.0])) == "80.00 ± 0.00"
    assert format_mean_std(*mean_std([])) == ""
    _run(tmp_path, "dann", 0, 0.90, 0.92)
    _run(tmp_path, "dann", 1, 0.80, 0.84)
    _run(tmp_path, "src", 0, 0.70, 0.71)
    rows = aggregate(load_runs([tmp_path])[0])
    by = {(r["method"], r["selection"]): r for r in rows}
    assert by[("src", "last")]["std"] is None and by[("dann", "last")]["std"] == pytest.approx(7.0711, 1e-4)
    md = to_markdown(rows, [], "t", [])
    assert "| s->t | src | 70.00 | 71.00 | 71.00 |" in md and "| s->t | dann | 85.00 ± 7.07 |" in md
    csv_std = {line.split(",")[2] + "/" + line.split(",")[3]: line.split(",")[6] for line in to_csv(rows).splitlines()[1:]}
    assert csv_std["src/last"] == "" and csv_std["dann/last"] == "7.07"


def test_peft_shape_misses_names_each_failed_criterion():
    assert peft_shape_misses({"in": -2.0, "cross": -1.0}, 1.99) == []  # exactly 2 points below still meets it
    assert peft_shape_misses({"in": -2.01, "cross": float("nan")}, 2.0) == ["in", "cross", "parameters"]
    assert peft_shape_misses({"accuracy": 0.5}, None) == ["parameters"], "an unknown share cannot meet the bound"


def test_archived_run_records_recollect_the_same_table(tmp_path):
    """A table's committed <table>.runs.jsonl stands in for its run folders: same rows, same failures."""
    runs = tmp_path / "runs"
    _run(runs, "dann", 0, 0.90, 0.92)
    _run(runs, "dann", 1, 0.80, 0.84)
    crashed = runs / "dann" / "seed2"
    crashed.mkdir()
    (crashed / "failed.json").write_text(json.dumps({"status": "failed", "error": "NonFiniteLossError: nan",
                                                     "config": {"method": {"name": "dann"}, "benchmark": {"name": "b"}}}))
    ok, failed = load_runs([runs])
    archive = tmp_path / "table.runs.jsonl"
    archive_runs(ok, failed, archive)
    ok2, failed2 = load_runs([archive])
    assert aggregate(ok2, failed=failed2) == aggregate(ok, failed=failed)
    assert failed2 == failed and failed2[0]["method"] == "dann"
    _run(tmp_path / "new", "src", 0, 0.70, 0.70)  # the archive plus a new run folder extends the table
    methods = {r["method"] for r in aggregate(load_runs([archive, tmp_path / "new"])[0])}
    assert methods == {"dann", "src"}
    with pytest.raises(FileNotFoundError, match="no run folder"):
        load_runs([tmp_path / "typo"])


def test_sweep_command_single_seed_is_not_multirun():
    assert sweep_command(["dacl run method=a seed=3"], [3]) == "dacl run method=a seed=3"


def test_sweep_command_drops_one_seeds_run_dir_when_it_becomes_a_multirun():
    cmd = sweep_command(["dacl run method=a seed=0 hydra.run.dir=runs/x/a/seed0"], [0, 1, 2])
    assert cmd == "dacl run -m method=a seed=0,1,2"


def test_sweep_command_widens_every_axis_of_a_pooled_sweep():
    """The validator study pools runs of several methods and trials: its command must name all of them (it used
    to print the first run's method and hparams_seed only)."""
    cmd = sweep_command(["dacl run +experiment=x method=cdan hparams_seed=2 seed=0 hydra.run.dir=r"], [0, 0, 1],
                        {"method": ["dann", "cdan", "dann"], "hparams_seed": [0, 2, 1]})
    assert cmd == "dacl run -m +experiment=x method=cdan,dann hparams_seed=0,1,2 seed=0,1"
    same = sweep_command(["dacl run method=mmd seed=0"], [0, 1], {"method": ["mmd"], "hparams_seed": [0, 0]})
    assert same == "dacl run -m method=mmd seed=0,1", "a default hparams_seed is not spelled out"


def _write(path, res):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))


def _result(method, seed, acc, command_extra="", **scores):
    return {"status": "ok", "benchmark": "b", "task": "s->t", "method": method, "seed": seed, "variant": None,
            "command": f"dacl run method={method} seed={seed} data_root=x trainer.threads=1 {command_extra}".strip(),
            "metrics": {"target_test_acc": {"last": acc, "source_val": acc, "oracle": acc, **scores}}}


def test_collector_separates_configurations_and_marks_failures(tmp_path):
    from dacl.reporting import to_markdown

    _write(tmp_path / "a0", _result("dann", 0, 0.9, "trainer.lr=0.01", im=0.88))
    _write(tmp_path / "a1", _result("dann", 1, 0.8, "trainer.lr=0.01", im=0.78))
    _write(tmp_path / "b0", _result("dann", 0, 0.5, "trainer.lr=0.1", im=0.40))
    crashed = tmp_path / "c0"
    crashed.mkdir()
    (crashed / "failed.json").write_text(json.dumps({
        "status": "failed", "error": "NonFiniteLossError: nan", "command": "dacl run method=dann seed=0 trainer.lr=10",
        "config": {"benchmark": {"name": "b"}, "method": {"name": "dann"}, "hparams_seed": 0}}))
    # an append-only log: the second line for the same run folder replaces the first
    log = [dict(_result("mmd", 0, 0.3), run_dir="r/mmd0"), dict(_result("mmd", 0, 0.7), run_dir="r/mmd0")]
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.jsonl").write_text("\n".join(json.dumps(r) for r in log) + '\n{"status": "ok", "ben')
    ok, failed = load_runs([tmp_path])
    assert len(ok) == 4 and len(failed) == 2  # the crashed run and the truncated log line
    rows = aggregate(ok, failed=failed)
    by = {(r["method"], r["selection"]): r for r in rows}
    assert by[("dann {trainer.lr=0.01}", "last")]["mean"] == pytest.approx(85.0), "threads never splits a configuration"
    assert by[("dann {trainer.lr=0.1}", "im")]["mean"] == pytest.approx(40.0)
    assert by[("mmd", "last")]["mean"] == pytest.approx(70.0)
    assert by[("dann {trainer.lr=10}", "last")]["n_failed"] == 1 and by[("dann {trainer.lr=10}", "last")]["n_seeds"] == 0
    assert [r["selection"] for r in rows if r["method"] == "mmd"] == ["last", "source_val", "oracle"]
    assert [r["selection"] for r in rows if r["method"] == "dann {trainer.lr=0.1}"] == ["last", "source_val", "im", "oracle"]
    md = to_markdown(rows, failed, "t", [])
    assert "| last | source_val | im | oracle |" in md
    assert "| s->t | dann {trainer.lr=0.01} | 85.00 ± 7.07 | 85.00 ± 7.07 | 83.00 ± 7.07 | 85.00 ± 7.07 |" in md
    failed_line = next(line for line in md.splitlines() if "trainer.lr=10}" in line)
    assert "failed" in failed_line and failed_line.rstrip(" |").endswith("1")
    assert "NonFiniteLossError" in md


def test_non_result_keys_mirror_the_run_folder_config():
    import yaml

    from dacl.reporting import NON_RESULT_KEYS

    cfg = yaml.safe_load((REPO_ROOT / "configs" / "config.yaml").read_text())
    assert set(cfg["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]) == NON_RESULT_KEYS


def test_torchrun_runs_get_their_own_row_and_command(tmp_path):
    for seed in (0, 1):
        _write(tmp_path / f"one{seed}", {**_result("dann", seed, 0.9), "hardware": {"processes": 1}})
        two = _result("dann", seed, 0.8)
        two["command"] = f"torchrun --nproc_per_node 2 -m dacl run method=dann seed={seed} data_root=x"
        _write(tmp_path / f"two{seed}", {**two, "hardware": {"processes": 2}})
    rows = {(r["method"], r["selection"]): r for r in aggregate(load_runs([tmp_path])[0])}
    assert rows[("dann", "last")]["mean"] == pytest.approx(90.0)
    assert rows[("dann (2 processes)", "last")]["mean"] == pytest.approx(80.0)
    assert rows[("dann (2 processes)", "last")]["command"] == "torchrun --nproc_per_node 2 -m dacl run -m method=dann seed=0,1 data_root=x"


def test_atomic_write_text_leaves_a_readable_file(tmp_path):
    from dacl.engine.results import atomic_write_text

    atomic_write_text(tmp_path / "t.md", "x\n")
    assert (tmp_path / "t.md").read_text() == "x\n" and (tmp_path / "t.md").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"], "no temp file left behind"


def test_a_later_root_supersedes_an_archived_record_of_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(Path("runs"), "dann", 0, 0.50, 0.50)
    archive_runs(*load_runs(["runs"]), tmp_path / "old.runs.jsonl")
    _run(Path("runs"), "dann", 0, 0.90, 0.90)  # the same run folder, re-run since it was archived
    ok, _ = load_runs([tmp_path / "old.runs.jsonl", "runs"])
    assert len(ok) == 1 and ok[0]["metrics"]["target_test_acc"]["last"] == 0.90


def test_git_commit_names_the_files_that_make_a_tree_dirty(tmp_path):
    import subprocess

    from dacl.engine.results import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "table.md").write_text("| a |\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    clean = git_commit(tmp_path)
    assert clean["commit"] and clean["dirty"] is False and "dirty_paths" not in clean
    (tmp_path / "untracked.txt").write_text("ignored: only tracked files count\n")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "table.md").write_text("| b |\n")
    dirty = git_commit(tmp_path)
    assert dirty["dirty"] is True and dirty["dirty_paths"] == ["table.md"]
    from dacl.reporting import commit_label
    assert commit_label({**dirty, "commit": "a" * 40}) == "a" * 12 + " (dirty: table.md)"
    assert commit_label({**clean, "commit": "b" * 40}, width=7) == "b" * 7
    assert commit_label({"commit": "c" * 40, "dirty": True}) == "c" * 12 + " (dirty)"  # recorded before dirty_paths


def test_collect_splits_a_shared_root_into_the_main_table_and_a_variants_own_table(tmp_path):
    """A pre-declared variant runs under its task's tag (runs/<task>) but has a table of its own: --variants keeps only
    it, --drop-variants leaves it out of the main table, and a name that matches nothing is a clear error."""
    import subprocess
    import sys
    runs = tmp_path / "runs"
    for seed in (0, 1):
        _run(runs, "coral", seed, 0.77, 0.77)
        _run(runs, "coral", seed, 0.83, 0.83, variant="balanced")
        _run(runs, "dann", seed, 0.90, 0.90, variant="tllib_grl")
    for path in runs.rglob("results.json"):  # what the collector's provenance reads besides the metrics
        res = json.loads(path.read_text())
        path.write_text(json.dumps({**res, "hardware": {"device": "cpu", "cpu": "test"}, "train_images_per_second": 1.0,
                                    "commit": "abc", "dirty": False}))
    collect = [sys.executable, "-m", "dacl", "collect", str(runs)]

    def rows(*opts: str) -> list[str]:
        out = tmp_path / "t"
        subprocess.run([*collect, "--out", str(out), *opts], check=True, capture_output=True, text=True)
        return sorted({line.split(" | ")[1] for line in out.with_suffix(".md").read_text().splitlines()
                       if line.startswith("| s->t")})

    assert rows() == ["coral", "coral [balanced]", "dann [tllib_grl]"]
    assert rows("--variants", "balanced") == ["coral [balanced]"]
    assert rows("--drop-variants", "balanced") == ["coral", "dann [tllib_grl]"]
    assert rows("--variants", "none,tllib_grl") == ["coral", "dann [tllib_grl]"]
    proc = subprocess.run([*collect, "--out", str(tmp_path / "x"), "--variants", "balancd"], capture_output=True, text=True)
    assert proc.returncode == 2 and "check the names" in proc.stderr and not (tmp_path / "x.md").exists()
