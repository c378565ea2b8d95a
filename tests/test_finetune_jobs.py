"""The fine-tuning scripts' job runner: per-seed reuse from run folders and from a table's committed run records."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ft(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce_finetune_under_test", REPO / "scripts" / "reproduce_finetune.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "argv", ["x"])
    spec.loader.exec_module(mod)
    mod.calls = []

    def fake_run(argv, cwd, **_):  # stands in for `dacl run -m ... seed=a,b hydra.sweep.dir=D`
        opts = dict(a.split("=", 1) for a in argv[3:] if "=" in a)
        seeds = [int(s) for s in opts["seed"].split(",")]
        mod.calls.append(seeds)
        for s in seeds:
            d = Path(cwd) / opts["hydra.sweep.dir"] / f"seed{s}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "results.json").write_text(json.dumps({"status": "ok", "seed": s, "lr": opts.get("trainer.lr"),
                                                        "commit": "abc"}))

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    return mod


def test_only_missing_seeds_run_and_changed_arguments_rerun(ft, tmp_path):
    out, log = tmp_path / "runs" / "job", tmp_path / "jobs.log"
    ft.dacl_job(["method=lora", "trainer.lr=1", "data_root=x"], out, [0], log)
    _, res = ft.dacl_job(["method=lora", "trainer.lr=1", "data_root=elsewhere"], out, [0, 1], log)
    assert ft.calls == [[0], [1]], "seed 0 is reused (data_root cannot change a result); only seed 1 runs"
    assert [r["seed"] for r in res] == [0, 1] and all(r["status"] == "ok" for r in res)
    ft.dacl_job(["method=lora", "trainer.lr=2", "data_root=x"], out, [0, 1], log)
    assert ft.calls[-1] == [0, 1], "a result-changing argument re-runs every seed"


def test_archived_records_stand_in_for_lost_run_folders(ft, tmp_path):
    import shutil

    out, log, archive = tmp_path / "runs" / "job", tmp_path / "jobs.log", tmp_path / "table.runs.jsonl"
    ckpt = tmp_path / "pre" / "model.pt"
    made = []

    def make() -> None:
        made.append(1)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"weights %d" % len(made))  # a re-made checkpoint differs, as a re-pre-training would

    args = ["method=lora", "trainer.lr=1"]
    _, first = ft.dacl_job(args, out, [0, 1], log, (ckpt, make))
    assert made == [1] and ft.calls == [[0, 1]] and first[0]["pretrained"] == ft.checkpoint_digest(ckpt)
    ft.save_archive(archive)
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(ckpt.parent)
    ft.ARCHIVE.clear()
    ft.USED.clear()
    ft.load_archive(archive)  # a fresh clone: no run folders, no checkpoint, only the committed records
    _, again = ft.dacl_job(args, out, [0, 1], log, (ckpt, make))
    assert ft.calls == [[0, 1]] and made == [1], "nothing re-runs, nothing is pre-trained again"
    assert [r["lr"] for r in again] == ["1", "1"] and again[0]["pretrained"] == first[0]["pretrained"]
    _, more = ft.dacl_job(args, out, [0, 1, 2], log, (ckpt, make))
    assert ft.calls[-1] == [2] and made == [1, 1], "a new seed needs the checkpoint: it is made, then only seed 2 runs"
    assert all(r["status"] == "ok" for r in more)
    assert more[0]["pretrained"] == first[0]["pretrained"] != more[2]["pretrained"] == ft.checkpoint_digest(ckpt), \
        "each seed keeps the digest of the checkpoint it actually started from"


def test_collect_only_trains_nothing_and_reports_missing_seeds_as_failed(ft, tmp_path, monkeypatch, capsys):
    out, log = tmp_path / "runs" / "job", tmp_path / "jobs.log"
    ft.dacl_job(["method=lora", "trainer.lr=1"], out, [0], log)
    monkeypatch.setattr(ft, "RUN_MISSING", False)
    made = []
    _, res = ft.dacl_job(["method=lora", "trainer.lr=1"], out, [0, 1], log, (tmp_path / "ckpt.pt", lambda: made.append(1)))
    assert ft.calls == [[0]] and not made, "no training run and no pre-training in collect-only mode"
    assert [r["status"] for r in res] == ["ok", "failed"] and "seed(s) [1]" in capsys.readouterr().out
    assert set(ft.USED) == {(ft.rel(out), 0)}, "only the finished seed goes into the archive"


def test_text_table_states_the_lora_paper_shape_from_its_own_numbers():
    """The 'Against full fine-tuning' lines are computed from the cells: gaps in points, and which of the three
    criteria (in-domain, cross-domain within 2 points; under 2% of parameters) a method misses."""
    from dacl.studies.finetune_tables import finetune_text
    from dacl.studies.spec import Study

    accs = {"full_finetune": (90.0, 85.0, 100.0), "lora": (89.0, 82.5, 0.3), "adapters": (89.5, 84.0, 2.6),
            "qlora": (88.5, 83.5, 0.4)}

    def record(method: str, seed: int) -> dict:
        a_in, a_cross, pct = accs[method]
        scores = {"source_test_acc": (a_in + seed - 1) / 100, "target_test_acc": (a_cross + seed - 1) / 100}
        return {"method": method, "task": "books->kitchen", "benchmark": "blitzer", "seed": seed, "command": "dacl run",
                "selection": {"last": scores, "source_val": scores}, "time_per_step_ms": 10.0,
                "params": {"model": {"trainable": pct, "total": 100.0}}, "peak_memory_mb": {"host_peak_rss": 1.0}}

    study = Study(name="t", title="t", table="t", kind="finetune_text")
    text, rendered = finetune_text(study, [record(m, s) for m in accs for s in range(3)], [], [], [])
    assert "- lora: -1.00 in-domain, -2.50 cross-domain, 0.300% trained: misses on cross-domain" in text
    assert "- adapters: -0.50 in-domain, -1.00 cross-domain, 2.600% trained: misses on parameters" in text
    assert "- qlora: -1.50 in-domain, -1.50 cross-domain, 0.400% trained: meets it" in text
    assert "- full_finetune:" not in text and "| lora | 89.00 ± 1.00 | 82.50 ± 1.00 |" in text
    text, _ = finetune_text(study, [record(m, s) for m in ("lora", "qlora") for s in range(3)], [], [], [])
    assert "Against full fine-tuning" not in text


def test_vision_table_states_the_lora_paper_shape_per_backbone(ft):
    """Each update is compared with full fine-tuning of its own backbone (target_val column); the lines name what
    it misses; scratch and full FT get no line, and a backbone without full FT gets none either."""
    cells = {("cnn", "full_finetune"): (96.0, 100.0), ("cnn", "lora"): (95.0, 3.3), ("cnn", "bitfit"): (92.0, 0.7),
             ("cnn", "scratch"): (96.4, 100.0), ("vit", "full_finetune"): (71.0, 100.0), ("vit", "ia3"): (69.5, 0.6),
             ("mlp", "lora"): (50.0, 1.0)}
    by_key = {("mnist->x", f"{m} [{b}]", sel): {"mean": acc + (sel == "last"), "std": 0.5, "n_seeds": 3,
                                               "trainable_percent": pct}
              for (b, m), (acc, pct) in cells.items() for sel in ("last", "target_val")}
    lines = ft.shape_against_full_finetune(by_key)
    body = [line for line in lines if line.startswith("- ")]
    assert body == ["- mnist->x lora [cnn]: -1.00 points against full FT's 96.00 ± 0.50, 3.300% trained: misses on parameters",
                    "- mnist->x bitfit [cnn]: -4.00 points against full FT's 96.00 ± 0.50, 0.700% trained: misses on accuracy",
                    "- mnist->x ia3 [vit]: -1.50 points against full FT's 71.00 ± 0.50, 0.600% trained: meets it"]
    assert ft.shape_against_full_finetune({k: v for k, v in by_key.items() if "full_finetune" not in k[1]}) == []
