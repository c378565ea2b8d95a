"""Studies as data: every committed study loads and composes, `--collect-only` re-makes the committed tables'
numbers from their run records, and `dacl reproduce` runs only what an archive lacks (chunked sweeps)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dacl.errors import ConfigError
from dacl.studies import spec
from dacl.studies.reproduce import Options, archive_path, reproduce
from dacl.studies.spec import REPO, all_studies, load_study
from dacl.studies.store import compose_point, plan, read_archive

NUMERIC = ("benchmark", "task", "method", "selection", "metric", "mean", "std", "n_seeds", "paper_value", "n_failed")


def _numbers(path: Path) -> list[tuple[str, ...]]:
    """A table's CSV without its command column: what must not change when a table is re-made."""
    with open(path) as f:
        return sorted(tuple(row.get(k, "") for k in NUMERIC) for row in csv.DictReader(f))


def test_every_study_loads_and_its_grid_composes():
    studies = all_studies()
    assert len(studies) >= 20
    for s in studies:
        grid = s.points() if not s.runs_of else load_study(s.runs_of).points()
        assert grid, s.name
        for entry in s.grid:  # the first point of every grid entry composes against today's configs
            first = tuple(f"{k}={v[0] if isinstance(v, list) else v}" for k, v in entry.items() if k != "processes")
            compose_point(s.command, first)


def test_a_study_file_mistake_is_one_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("title: t\ntable: x\nkind: domain_adaptation\ngrid: [{method: dann}]\n"
                                       "paper: [{benchmark: b, method: dann, value: 1, source: s, protocol: same}]\n")
    with pytest.raises(ConfigError, match="matches.*differs"):
        load_study("bad", tmp_path)
    with pytest.raises(ConfigError, match="unknown study 'digits_mnist_usp'.*digits_mnist_usps"):
        load_study("digits_mnist_usp")


@pytest.mark.parametrize("name", ["digits_mnist_usps_deepjdot_authors", "continual_permuted_mnist"])
def test_collect_only_remakes_the_committed_numbers(name, tmp_path):
    study = load_study(name)
    reproduce(name, Options(collect_only=True, out=tmp_path, echo=lambda _: None))
    made = tmp_path / f"{Path(study.table).name}.csv"
    assert _numbers(made) == _numbers(REPO / f"{study.table}.csv")
    assert (tmp_path / f"{Path(study.table).name}.runs.jsonl").read_text() == archive_path(study).read_text()


@pytest.mark.slow
def test_collect_only_remakes_every_archived_table(tmp_path):
    checked = 0
    for s in all_studies():
        if not archive_path(s).is_file():
            continue
        reproduce(s.name, Options(collect_only=True, out=tmp_path / s.name, echo=lambda _: None))
        made = tmp_path / s.name / f"{Path(s.table).name}.csv"
        assert _numbers(made) == _numbers(REPO / f"{s.table}.csv"), s.name
        checked += 1
    assert checked >= 10


def _tiny_study(folder: Path, lr: float = 0.01) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "tiny.yaml").write_text(f"""
title: "tiny source-only vs DANN"
table: {folder / 'tables' / 'tiny'}
kind: domain_adaptation
grid:
  - benchmark: digits_offline
    method: [source_only, dann]
    seed: [0]
    trainer.max_steps: 6
    trainer.eval_every: 3
    trainer.lr: {lr}
runtime: [trainer.threads=1, trainer.progress=false]
paper:
  - {{benchmark: digits_offline, method: dann, value: 50.0, source: "a made-up reference", protocol: "differs: test"}}
""")


def test_reproduce_runs_only_what_the_archive_lacks(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    _tiny_study(studies)
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    opts = Options(runs=tmp_path / "runs", jobs=2, echo=lambda _: None)
    table = reproduce("tiny", opts)
    archive = read_archive(studies / "tables" / "tiny.runs.jsonl")
    assert sorted(r["method"] for r in archive) == ["dann", "source_only"] and all(r["status"] == "ok" for r in archive)
    text = table.read_text()
    assert "| mnist_5k->uci_digits | dann |" in text and "a made-up reference" in text and "made by: `dacl reproduce tiny`" in text
    assert "## Against source-only" in text and "- mnist_5k->uci_digits, dann: " in text

    # a later chunk continues: with one record gone, only that run is trained again
    (studies / "tables" / "tiny.runs.jsonl").write_text(json.dumps(archive[0]) + "\n")
    for folder in list((tmp_path / "runs").rglob("results.json")):
        folder.parent.rename(folder.parent.with_name(folder.parent.name + "_gone"))
    launched: list[str] = []
    reproduce("tiny", Options(runs=tmp_path / "runs", echo=launched.append))
    assert sum(line.startswith("[") for line in launched) == 1
    assert len(read_archive(studies / "tables" / "tiny.runs.jsonl")) == 2

    # a changed recipe makes the archived runs stale: they leave the table, and are re-run
    _tiny_study(studies, lr=0.05)
    grid = plan("run", load_study("tiny").points(), read_archive(studies / "tables" / "tiny.runs.jsonl"))
    assert len(grid.missing) == 2 and len(grid.stale) == 2 and "trainer.lr: 0.01 -> 0.05" in grid.stale[0][1]
    reproduce("tiny", Options(runs=tmp_path / "runs", collect_only=True, echo=lambda _: None))
    text = table.read_text()
    assert "2 of 2 runs of the grid have no record yet" in text and "2 archived runs are not shown" in text
    assert "| dann |" not in text


def test_collect_only_without_any_record_writes_no_table(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    _tiny_study(studies)
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    said: list[str] = []
    reproduce("tiny", Options(runs=tmp_path / "runs", collect_only=True, echo=said.append))
    assert not (studies / "tables").exists() and "no run records yet, no table written" in said[-1]


def test_each_adapted_row_is_set_against_its_own_source_only_row_and_a_small_gain_is_marked():
    from dacl.studies.tables import against_source_only

    def row(method: str, mean: float, selection: str = "source_val", n: int = 3) -> dict:
        return {"benchmark": "b", "task": "m->u", "method": method, "selection": selection, "mean": mean, "n_seeds": n}

    rows = [row("source_only", 76.8), row("dann", 91.9), row("coral", 77.6, n=2), row("source_only [paper]", 52.0),
            row("dann [paper]", 54.5), row("dann", 10.0, selection="last"), row("mmd", float("nan"))]
    text = against_source_only(rows, "source_val")
    assert "- m->u, dann: +15.10 over source_only (91.90 vs 76.80)\n" in text
    assert "- m->u, coral: +0.80 over source_only (77.60 vs 76.80; 2 vs 3 seeds) — under +2, see the notes" in text
    assert "- m->u, dann [paper]: +2.50 over source_only [paper] (54.50 vs 52.00)\n" in text
    assert "mmd" not in text and "10.00" not in text and "source_only:" not in text
    assert against_source_only([row("dann", 90.0)], "source_val") == ""


def test_side_by_side_workers_start_every_seeds_shared_run_then_finish_seed_by_seed():
    from dacl.studies.reproduce import launch_order
    from dacl.studies.store import Point

    grid = [Point((f"method={m}", f"seed={s}"), {"method": {"name": m}, "seed": s})
            for m in ("bn_adapt", "tent", "shot_im") for s in (0, 1, 2)]
    order = [(p.config["method"]["name"], p.config["seed"]) for p in launch_order(grid)]
    assert order[:3] == [("bn_adapt", 0), ("bn_adapt", 1), ("bn_adapt", 2)]  # three source models train first
    assert order[3:] == [("tent", 0), ("shot_im", 0), ("tent", 1), ("shot_im", 1), ("tent", 2), ("shot_im", 2)]


def test_reproduce_cli_list_and_errors():
    out = subprocess.run([sys.executable, "-m", "dacl", "reproduce", "--list"], capture_output=True, text=True)
    assert out.returncode == 0 and "continual_split_mnist" in out.stdout and "paper_results/digits/mnist_usps.md" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "dacl", "reproduce", "digits_mnist_usp"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "did you mean 'digits_mnist_usps'" in bad.stderr.lower()
    result = subprocess.run([sys.executable, "-m", "dacl", "reproduce", "digits_mnist_usps", "--collect-only",
                             "trainer.lr=0.1"], capture_output=True, text=True)
    assert result.returncode == 2 and "could change a result" in result.stderr


def test_a_continual_study_runs_and_continues(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "cl.yaml").write_text(f"""
title: "tiny split MNIST"
table: {tmp_path / 'tables' / 'cl'}
kind: continual
command: continual
grid:
  - stream: split_mnist
    stream.dataset: mnist_5k
    scenario: class
    strategy: [naive, replay]
    seed: [0]
    trainer.steps_per_task: 10
runtime: [trainer.threads=1]
paper:
  - {{benchmark: split_mnist, task: class, method: naive, value: 19.9, source: "van de Ven & Tolias 2019", protocol: "differs: 10 steps"}}
""")
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    lines: list[str] = []
    table = reproduce("cl", Options(runs=tmp_path / "runs", echo=lines.append))
    assert sum(line.startswith("[") for line in lines) == 2
    text = table.read_text()
    assert "| class-IL | naive |" in text and "| class-IL | replay |" in text and "| 19.90 |" in text
    lines.clear()
    reproduce("cl", Options(runs=tmp_path / "runs", echo=lines.append))
    assert not any(line.startswith("[") for line in lines)  # everything is in the archive: nothing runs again


@pytest.mark.slow
def test_reproduce_runs_each_point_through_a_hydra_launcher(tmp_path, monkeypatch):
    """--launcher submitit_slurm on a cluster; submitit_local here: the same one-job multirun per grid point."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the 'cluster' extra (make installs it)")
    studies = tmp_path / "studies"
    _tiny_study(studies)
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    lines: list[str] = []
    reproduce("tiny", Options(runs=tmp_path / "runs", launcher="submitit_local", echo=lines.append))
    archive = read_archive(studies / "tables" / "tiny.runs.jsonl")
    assert sorted(r["method"] for r in archive) == ["dann", "source_only"] and all(r["status"] == "ok" for r in archive)
    assert len(list((tmp_path / "runs").rglob("multirun.yaml"))) == 2  # each ran as a one-job multirun
    assert list((tmp_path / "runs").rglob(".submitit"))  # through submitit's launcher


def _write_study(tmp_path: Path, monkeypatch, name: str, kind: str, body: str) -> Path:
    """A study file ``name`` (its grid and options in ``body``) in a scratch study folder that dacl reads."""
    studies = tmp_path / "studies"
    studies.mkdir(exist_ok=True)
    (studies / f"{name}.yaml").write_text(f"title: tiny {name}\ntable: {studies / 'tables' / name}\nkind: {kind}\n{body}")
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    return studies


@pytest.mark.slow
def test_a_test_time_study_adapts_one_shared_source_model(tmp_path, monkeypatch):
    """Every test-time method of a seed adapts the same source run (trained once, even by two jobs side by side),
    and the table shows each protocol beside that source model."""
    studies = _write_study(tmp_path, monkeypatch, "tta", "test_time_adaptation", """
grid:
  - benchmark: synthetic_shift
    model: lenet_bn
    method: [bn_adapt, tent]
    seed: [0]
    trainer.max_steps: 60
    trainer.eval_every: 60
  - benchmark: synthetic_shift
    model: lenet_bn
    method: shot_im
    variant: offline
    tta.protocol: offline
    tta.epochs: 2
    seed: [0]
    trainer.max_steps: 60
    trainer.eval_every: 60
runtime: [trainer.threads=1, trainer.progress=false]
paper:
  - {benchmark: synthetic_shift, method: "shot_im [offline]", value: 90.0, source: "a made-up reference", protocol: "differs: test"}
""")
    table = reproduce("tta", Options(runs=tmp_path / "runs", jobs=2, echo=lambda _: None))
    sources = list((tmp_path / "runs" / "source_models").rglob("results.json"))
    assert len(sources) == 1, "one source run for the three test-time runs"
    records = read_archive(studies / "tables" / "tta.runs.jsonl")
    assert len(records) == 3 and all(r["steps"] == 60 for r in records)
    adapted = {r["variant"] or r["method"]: r["metrics"]["test_time_adaptation"] for r in records}
    assert {a["source_run"] for a in adapted.values()} == {str(sources[0].parent)}
    assert len({a["source_target_test_acc"] for a in adapted.values()}) == 1
    assert adapted["offline"]["protocol"] == "offline" and adapted["offline"]["epochs"] == 2
    source_acc = 100 * adapted["tent"]["source_target_test_acc"]
    text = table.read_text()
    assert f"| source model | no adaptation | {source_acc:.2f} | 1 |" in text
    assert "| shot_im [offline] | offline |" in text and "| 90.00 |" in text and "| tent | episodic_domain |" in text
    assert all(a["target_test_acc"] > a["source_target_test_acc"] for a in adapted.values()), adapted


@pytest.mark.slow
def test_a_corruption_suite_study_tables_error_per_corruption_and_severity(tmp_path, monkeypatch):
    """One run per method x protocol x severity, all adapting one source model; the table gives each corruption of
    the last severity, the mean per severity and overall, the source model beside them."""
    studies = _write_study(tmp_path, monkeypatch, "suite", "tta_corruptions", """
grid:
  - benchmark: mnist_c
    benchmark.source: uci_digits
    benchmark.n_test: 200
    benchmark.corruptions: "[gaussian_blur,contrast]"
    benchmark.severities: "[3,5]"
    model: lenet_bn
    method: bn_adapt
    tta.protocol: [episodic_domain, continual]
    tta.domain_group: [3, 5]
    seed: [0]
    trainer.max_steps: 60
    trainer.eval_every: 60
runtime: [trainer.threads=1, trainer.progress=false]
""")
    table = reproduce("suite", Options(runs=tmp_path / "runs", echo=lambda _: None))
    assert len(list((tmp_path / "runs" / "source_models").rglob("results.json"))) == 1
    records = read_archive(studies / "tables" / "suite.runs.jsonl")
    assert len(records) == 4
    five = next(r["metrics"]["test_time_adaptation"] for r in records
                if r["config"]["tta"] == {**r["config"]["tta"], "domain_group": 5, "protocol": "episodic_domain"})
    assert five["domain_order"] == ["gaussian_blur@5", "contrast@5"]
    error = {n: 100 * (1 - a) for n, a in five["per_domain"].items()}
    source_error = {n: 100 * (1 - a) for n, a in five["source_per_domain"].items()}
    assert error["contrast@5"] < source_error["contrast@5"] - 5, "re-estimated BN statistics undo a contrast shift"
    text = table.read_text()
    header = "| corruption | source model | bn_adapt [continual] | bn_adapt [episodic_domain] |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| contrast@5 |"))
    assert row.split("|")[2].strip() == f"{source_error['contrast@5']:.1f}"
    assert row.split("|")[4].strip() == f"{error['contrast@5']:.1f}"
    labels = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "@" in line]
    assert labels == ["gaussian_blur@5", "contrast@5", "mean@3", "mean@5", "mean@3-5"], "the benchmark's order"
    assert "contrast@3 |" not in text, "only the last severity is listed corruption by corruption"


def test_the_fault_matrix_study_lists_every_fault_case():
    from dacl.reliability import cases, slug

    grid = {o.partition("=")[2] for p in load_study("reliability_faults").points() for o in p if o.startswith("case=")}
    assert grid == {slug(c.name) for c in cases()}


@pytest.mark.slow
def test_a_measurement_study_archives_and_tables_its_measurements(tmp_path, monkeypatch):
    """`command: measure` grid points run `dacl measure` (with the data root reproduce passes) into run folders; the
    records reach the archive and the renderer compares the methods."""
    studies = _write_study(tmp_path, monkeypatch, "speed", "throughput", """command: measure
grid:
  - measurement: train_throughput
    benchmark: digits_offline
    method: [source_only, dann]
    steps: 3
    warmup: 1
    batch_size: 16
runtime: [threads=1]
""")
    table = reproduce("speed", Options(runs=tmp_path / "runs", data_root=str(tmp_path), echo=lambda _: None))
    records = read_archive(studies / "tables" / "speed.runs.jsonl")
    assert sorted(r["config"]["method"] for r in records) == ["dann", "source_only"]
    assert all(r["kind"] == "measurement" and r["metrics"]["images_per_second"] > 0 for r in records)
    dann = next(r["metrics"] for r in records if r["config"]["method"] == "dann")
    assert dann["images_per_step"] == 32, "a DA step takes a source and a target batch"
    text = table.read_text()
    assert "| source_only |" in text and "| dann |" in text and "1.00x" in text


@pytest.mark.slow
def test_a_fine_tuning_study_tables_updates_against_full_fine_tuning_and_draws_the_label_curve(tmp_path, monkeypatch):
    """Every baseline of a backbone starts from one shared pre-training run; the table puts each update beside full
    fine-tuning of the same backbone, and runs on fewer labels become the label-efficiency figure."""
    words = ["benchmark=digits_offline", "model=lenet", "method=source_only", "trainer.max_steps=20",
             "trainer.eval_every=20", "trainer.batch_size=32"]
    studies = _write_study(tmp_path, monkeypatch, "ft", "finetune_vision", f"""
grid:
  - &job
    benchmark: synthetic_shift
    model: lenet
    pretrain.overrides: "[{','.join(repr(w) for w in words)}]"
    method: [full_finetune, lora]
    seed: [0]
    trainer.max_steps: 10
    trainer.eval_every: 5
    trainer.batch_size: 16
  - {{<<: *job, method: lora, benchmark.max_source_train: 20}}
runtime: [trainer.threads=1, trainer.progress=false]
""")
    table = reproduce("ft", Options(runs=tmp_path / "runs", jobs=2, echo=lambda _: None))
    assert len(list((tmp_path / "runs" / "pretrain").rglob("results.json"))) == 1, "one pre-training run for all three"
    records = read_archive(studies / "tables" / "ft.runs.jsonl")
    assert len(records) == 3 and len({r["pretrained_from"] for r in records}) == 1
    lora, full = (next(r for r in records if r["method"] == m and r["config"]["benchmark"]["max_source_train"] is None)
                  for m in ("lora", "full_finetune"))
    assert lora["params"]["model"]["trainable"] < full["params"]["model"]["trainable"]
    gap = 100 * (lora["selection"]["source_val"]["target_test_acc"] - full["selection"]["source_val"]["target_test_acc"])
    text = table.read_text()
    task = lora["task"]
    assert f"| {task} | lora [lenet] |" in text and f"| {task} | full_finetune [lenet] |" in text
    assert f"lora [lenet]: {gap:+.2f} points against full fine-tuning's" in text
    assert "## Label efficiency" in text and (studies / "tables" / "ft_label_efficiency.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(studies / "tables" / "ft.csv")))
    assert sorted(int(r["n_labels"]) for r in rows if r["method"] == "lora [lenet]" and r["selection"] == "last") == \
        [20, lora["data_sizes"]["source_train"]]


@pytest.mark.slow
def test_a_feature_analysis_study_trains_what_it_analyses_once_and_draws_from_its_records(tmp_path, monkeypatch):
    """Each point names the run it analyses by its overrides: trained once into a shared folder, measured, and the
    table and both figures come from the records alone (a collect-only rebuild draws them again)."""
    run = "['benchmark=digits_offline','method={m}','trainer.max_steps=20','trainer.eval_every=10','trainer.progress=false']"
    studies = _write_study(tmp_path, monkeypatch, "pad", "feature_analysis", f"""command: measure
grid:
  - measurement: feature_analysis
    run: "{run.format(m='source_only')}"
    per_domain: 100
  - measurement: feature_analysis
    run: "{run.format(m='dann')}"
    per_domain: 100
runtime: [threads=1, runs={tmp_path / 'analysed'}]
""")
    table = reproduce("pad", Options(runs=tmp_path / "runs", data_root=str(tmp_path), jobs=2, echo=lambda _: None))
    trained = sorted((tmp_path / "analysed").rglob("results.json"))
    assert [p.parts[-4] for p in trained] == ["dann", "source_only"]
    records = read_archive(studies / "tables" / "pad.runs.jsonl")
    for r in records:
        m = r["metrics"]
        made = json.loads(Path(m["run_dir"], "results.json").read_text())
        assert m["analysed_method"] == made["method"] and 0.0 <= m["proxy_a_distance"] <= 2.0
        assert sum(m["reliability"]["count"]) == made["data_sizes"]["target_test"]
        assert len(m["tsne"]["source"]) == len(m["tsne"]["target"]) == 100
    text = table.read_text()
    assert "| source_only seed0 | mnist_5k->uci_digits |" in text and "| dann seed0 |" in text
    reproduce("pad", Options(collect_only=True, out=tmp_path / "again", echo=lambda _: None))
    for suffix in ("tsne", "reliability"):
        assert (tmp_path / "again" / f"pad_{suffix}.png").stat().st_size > 5000
    assert sorted((tmp_path / "analysed").rglob("results.json")) == trained, "nothing trained again"


@pytest.mark.slow
def test_the_streaming_study_measures_each_cell_in_its_own_process(tmp_path, monkeypatch):
    """Loader cells over one synthetic JPEG tree (written once), each a fresh process with its own peak RSS; the TLlib
    pipeline without a checkout is one error naming the fix."""
    studies = _write_study(tmp_path, monkeypatch, "stream", "streaming_throughput", f"""command: measure
grid:
  - measurement: streaming_throughput
    images: 120
    pipeline: dacl
    workers: [0, 1]
    model: none
    steps: 2
    warmup: 1
    batch: 8
runtime: [trees={tmp_path / 'trees'}]
""")
    table = reproduce("stream", Options(runs=tmp_path / "runs", echo=lambda _: None))
    records = read_archive(studies / "tables" / "stream.runs.jsonl")
    assert sorted(r["metrics"]["workers"] for r in records) == [0, 1]
    assert all(r["metrics"]["images"] == 120 and r["metrics"]["images_per_second"] > 0 for r in records)
    assert next(r for r in records if r["metrics"]["workers"] == 1)["metrics"]["worker_peak_rss_mb"] > 0
    assert len(list((tmp_path / "trees").glob("domainnet_120/domainnet/image_list/*.txt"))) > 0
    assert "| 120 | dacl | 0 |" in table.read_text() and "| 120 | dacl | 1 |" in table.read_text()
    bad = subprocess.run([sys.executable, "-m", "dacl", "measure", "measurement=streaming_throughput", "pipeline=tllib",
                          f"trees={tmp_path / 'trees'}", "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "tllib=<a checkout" in bad.stderr


@pytest.mark.slow
def test_the_independent_lwf_loop_keeps_the_first_task_that_plain_fine_tuning_forgets(tmp_path, monkeypatch):
    """The reference LwF loop (measurement=lwf_reference) learns every permuted task, keeps none it has not seen,
    consults the previous model from the second task on, and retains the first task clearly better than the same
    loop without its distillation term; its study tables both."""
    studies = _write_study(tmp_path, monkeypatch, "lwf", "lwf_reference", """command: measure
grid:
  - &cell
    measurement: lwf_reference
    dataset: mnist_5k
    tasks: 3
    steps: 200
    batch: 64
    lr: 0.001
  - {<<: *cell, distill: false}
runtime: [threads=1]
""")
    table = reproduce("lwf", Options(runs=tmp_path / "runs", data_root=str(tmp_path), echo=lambda _: None))
    records = {r["config"]["distill"]: r["metrics"] for r in read_archive(studies / "tables" / "lwf.runs.jsonl")}
    m, control = records[True], records[False]
    matrix = m["accuracy_matrix"]
    assert [len(row) for row in matrix] == [3, 3, 3]
    assert all(matrix[k][k] > 50 for k in range(3)), "each permutation is learned while it is the current task"
    assert all(matrix[k][j] < 30 for k in range(3) for j in range(k + 1, 3)), "an unseen permutation is near chance"
    assert m["teacher_confidence"][0] is None and all(0.1 <= v[0] <= 1 for v in m["teacher_confidence"][1:])
    assert matrix[-1][0] > control["accuracy_matrix"][-1][0] + 4, "distillation keeps the first task"
    assert m["average_accuracy"] == pytest.approx(sum(matrix[-1]) / 3)
    text = table.read_text()
    assert "| 28 x 28, task 0 not permuted | LwF | 3 | 200 |" in text and f"{m['average_accuracy']:.2f}" in text
    assert "| cross-entropy only (control) | 3 | 200 |" in text


def test_gains_are_averaged_over_the_tasks_each_method_has_run():
    from dacl.studies.tables import against_source_only

    def row(task, method, mean):
        return {"benchmark": "b", "task": task, "method": method, "selection": "source_val", "mean": mean, "n_seeds": 1}

    rows = [row("a->b", "source_only", 80.0), row("a->b", "dann", 86.0), row("b->a", "source_only", 90.0),
            row("b->a", "dann", 91.0), row("c->a", "source_only", 50.0), row("a->b", "mmd", 81.0)]
    text = against_source_only(rows, "source_val")
    assert "- dann: 88.50 vs source-only 85.00, +3.50 over 2 of 3 tasks" in text
    assert "- mmd: 81.00 vs source-only 80.00, +1.00 over 1 of 3 tasks — under +2" in text
    assert "Averaged" not in against_source_only(rows[:2], "source_val")


@pytest.mark.parametrize("line", ["[1, 2]", "null", '"text"', '{"status": "ok"}', '{"metrics": {}}',
                                  '{"status": "ok", "metrics": [1]}', '{"status": "ok", "metrics": {"a": 1'])
def test_an_archive_line_that_is_not_a_run_record_is_one_error_naming_the_line(tmp_path, line):
    from dacl.errors import ConfigError
    from dacl.studies.store import read_archive

    path = tmp_path / "x.runs.jsonl"
    path.write_text('{"status": "ok", "metrics": {"target_test_acc": {"last": 0.5}}}\n' + line + "\n")
    with pytest.raises(ConfigError, match=r"x\.runs\.jsonl:2 is not a run record"):
        read_archive(path)
