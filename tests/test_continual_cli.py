"""``dacl continual`` end to end on the offline digits, the stream registry, and the Avalanche cross-check."""
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacl.registry import STREAMS
from dacl.reporting import to_csv

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "dacl", "continual", *args], cwd=cwd, capture_output=True, text=True)


def test_continual_cli_writes_results_and_heatmap(tmp_path):
    out = tmp_path / "run"
    proc = _cli("stream=split_mnist", "stream.dataset=mnist_5k", "scenario=class", "strategy=replay",
                "trainer.steps_per_task=40", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    m = res["metrics"]
    assert len(m["accuracy_matrix"]) == 5 and len(m["accuracy_matrix"][0]) == 5
    assert m["average_accuracy"] == pytest.approx(sum(m["accuracy_matrix"][-1]) / 5)
    assert {"bwt", "fwt", "forgetting", "images_per_second"} <= set(m)
    assert res["commit"] and res["hardware"] and res["command"].startswith("dacl continual")
    assert (out / "accuracy_matrix.png").stat().st_size > 1000


def test_continual_table_shows_a_spread_only_where_there_are_seeds_to_spread():
    """One seed has no standard deviation: the table must not print a measured-looking '± 0.00'."""
    from dacl.studies.spec import Study
    from dacl.studies.tables import continual

    run = lambda method, seed, acc: {"stream": "s", "scenario": "class", "method": method, "seed": seed,  # noqa: E731
                                     "command": f"dacl continual strategy={method} seed={seed}",
                                     "config": {"train": {}, "model": {}},
                                     "metrics": {"average_accuracy": acc, "bwt": -0.1, "forgetting": 0.1,
                                                 "images_per_second": 100.0}}
    study = Study(name="t", title="t", table="t", kind="continual", command="continual")
    markdown, rendered = continual(study, [run("ewc", 0, 0.30), run("ewc", 1, 0.40), run("lwf", 0, 0.16)], [], [], [])
    md = markdown.splitlines()
    ewc, lwf = (next(line for line in md if line.startswith(f"| class-IL | {m} |")) for m in ("ewc", "lwf"))
    assert "35.00 ± 7.07" in ewc and "| 2 |" in ewc
    assert "| 16.00 |" in lwf and "±" not in lwf and "| 1 |" in lwf
    csv_rows = list(csv.DictReader(io.StringIO(to_csv(rendered.rows))))
    assert [(r["method"], r["std"]) for r in csv_rows] == [("ewc", "7.07"), ("lwf", "")]


def test_continual_cli_names_the_options_for_a_wrong_strategy(tmp_path):
    proc = _cli("strategy=ewk", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "unknown strategy 'ewk'" in proc.stderr and "Did you mean 'ewc'" in proc.stderr


def test_permuted_stream_has_disjoint_label_ranges_for_class_il():
    s = STREAMS.get("permuted_mnist")(dataset="uci_digits", n_tasks=3)
    assert s.num_classes == 30 and s.tasks[2].classes == tuple(range(20, 30))
    assert int(s.tasks[2].train[1].min()) == 20


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "mnist_m_train.npz").exists(), reason="needs ../shared/data (MNIST, USPS, MNIST-M)")
@pytest.mark.slow
def test_digit_domains_stream_is_mnist_usps_mnistm_at_32px():
    s = STREAMS.get("digit_domains")(data_root=str(SHARED))
    assert [t.name for t in s.tasks] == ["mnist", "usps", "mnist_m"]
    assert all(t.train[0].shape[1:] == (3, 32, 32) for t in s.tasks) and s.num_classes == 10


@pytest.mark.slow
def test_avalanche_and_dacl_run_the_same_stream(tmp_path, monkeypatch):
    """Both frameworks train the same MLP from the same weights on the same tensors and are scored by the same
    evaluator: both learn the first task, and in both replay (and dacl's Avalanche-policy replay_eb) ends with more
    accuracy than naive fine-tuning. Runs the comparison as a study, so its records and table are checked too."""
    pytest.importorskip("avalanche", reason="install the 'avalanche' extra (make install does)")
    import torch

    from dacl.analysis import avalanche_comparison as ca
    from dacl.studies import spec
    from dacl.studies.reproduce import Options, reproduce
    from dacl.studies.store import read_archive

    stream = STREAMS.get("split_mnist")(dataset="mnist_5k")
    a, b = ca.make_model(stream, 3, [100]), ca.make_model(stream, 3, [100])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), "same seed, same initial weights"
    studies = tmp_path / "studies"
    studies.mkdir()
    common = "    dataset: mnist_5k\n    batch_size: 64\n    hidden: [[100]]\n    ewc_lambda: 1\n    mem_size: 300\n" \
             "    optimizer_state: reset\n    seed: [0]\n"
    (studies / "cmp.yaml").write_text(f"""
title: tiny comparison
table: {studies / 'cmp'}
kind: framework_comparison
command: measure
grid:
  - measurement: avalanche_comparison
    framework: [dacl, avalanche]
    strategy: [naive, replay]
{common}  - measurement: avalanche_comparison
    strategy: replay_eb
{common}runtime: [threads=1]
""")
    monkeypatch.setattr(spec, "STUDY_DIR", studies)
    table = reproduce("cmp", Options(runs=tmp_path / "runs", echo=lambda _: None))
    runs = {f"{r['config']['framework']}/{r['config']['strategy']}": r["metrics"] for r in read_archive(studies / "cmp.runs.jsonl")}
    assert set(runs) == {"dacl/naive", "avalanche/naive", "dacl/replay", "avalanche/replay", "dacl/replay_eb"}
    for key, r in runs.items():
        assert len(r["matrix"]) == 5 and r["images"] > 0 and r["matrix"][0][0] > 0.9, (key, r["matrix"][0])
    for fw, strategy in (("dacl", "replay"), ("avalanche", "replay"), ("dacl", "replay_eb")):
        naive, replay = runs[f"{fw}/naive"]["matrix"][-1], runs[f"{fw}/{strategy}"]["matrix"][-1]
        assert sum(replay) > sum(naive) + 0.5, f"{fw} {strategy} must remember more: {replay} vs {naive}"
    csv = table.with_suffix(".csv").read_text().splitlines()
    assert len(csv) == 1 + 5 and csv[0].startswith("benchmark,task,method") and "| replay_eb | dacl |" in table.read_text()


@pytest.mark.parametrize("policy", ["keep", "reset"])
def test_compare_avalanche_applies_one_optimizer_state_policy_to_both_frameworks(policy, monkeypatch):
    """avalanche-lib 0.6 keeps Adam's moments across experiences unless told otherwise; the comparison must give
    dacl and Avalanche the same policy. Spies on the optimizers both build: with `reset`, Avalanche's Adam step
    count restarts at every experience and dacl builds one optimizer per experience; with `keep`, neither does."""
    pytest.importorskip("avalanche", reason="install the 'avalanche' extra (make install does)")
    import math

    import torch

    from dacl.analysis import avalanche_comparison as ca

    built: dict[str, list] = {"Adam": [], "AdamW": []}

    def spy(name: str) -> type:
        class Recorded(getattr(torch.optim, name)):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                built[name].append(self)
        return Recorded

    for name in built:
        monkeypatch.setattr(torch.optim, name, spy(name))
    stream = STREAMS.get("split_mnist")(dataset="mnist_5k")
    config = {**ca.DEFAULTS, "seed": 0, "epochs": 1, "batch_size": 256, "hidden": [32], "optimizer_state": policy,
              "ewc_lambda": 1.0, "mem_size": 100}
    ca.run_avalanche(config, stream)
    iters = [math.ceil(len(t.train[0]) / config["batch_size"]) for t in stream.tasks]
    (adam,) = built["Adam"]
    steps = int(adam.state[next(iter(adam.state))]["step"])
    assert steps == (iters[-1] if policy == "reset" else sum(iters))
    ca.run_dacl(config, stream)
    assert len(built["AdamW"]) == (len(stream.tasks) if policy == "reset" else 1)


@pytest.mark.slow
def test_a_continual_run_killed_with_sigkill_resumes_to_the_same_matrix_bitwise(tmp_path):
    """`kill -9` mid-stream, then trainer.resume=true: the final accuracy matrix equals an uninterrupted run's."""
    import signal
    import time

    import torch

    args = ["stream=split_mnist", "stream.dataset=mnist_5k", "scenario=class", "strategy=replay",
            "trainer.steps_per_task=200", "trainer.ckpt_every=50", "trainer.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, "-m", "dacl", "continual", *args, f"hydra.run.dir={tmp_path / 'full'}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert full.returncode == 0, full.stderr[-2000:]
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dacl", "continual", *args, f"hydra.run.dir={killed_dir}"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while not (killed_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive, "the run finished before its first checkpoint; it must be killed mid-stream"
    step = torch.load(killed_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 1000 and not (killed_dir / "results.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "dacl", "continual", *args, "trainer.resume=true",
                              f"hydra.run.dir={killed_dir}"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "full" / "results.json").read_text())["metrics"]
    resumed_record = json.loads((killed_dir / "results.json").read_text())
    assert resumed_record["resumed_from"]["step"] == step, "continued the checkpoint, not a fresh run of the same seed"
    b = resumed_record["metrics"]
    assert b["accuracy_matrix"] == a["accuracy_matrix"] and b["initial_accuracy"] == a["initial_accuracy"]


def test_continual_rejects_settings_it_would_ignore_and_keeps_short_runs_apart(tmp_path):
    proc = _cli("stream=split_mnist", "stream.dataset=mnist_5k", "+plugins=[{name: ewc}]", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "dacl: error: unknown dacl continual option(s) ['plugins']" in proc.stderr
    assert "strategy.plugins" in proc.stderr and not (tmp_path / "results.json").exists()
    proc = _cli("stream=split_mnist", "stream.dataset=mnist_5k", "scenario=class", "strategy=naive", "tag=t",
                "trainer.steps_per_task=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = [p.relative_to(tmp_path / "runs" / "t").parent.as_posix() for p in tmp_path.rglob("results.json")]
    assert found == ["split_mnist/class/naive/stream.dataset=mnist_5k,trainer.steps_per_task=5/seed0"]
