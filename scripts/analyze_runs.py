#!/usr/bin/env python
"""Feature-level analysis of finished DA runs: proxy A-distance, t-SNE before/after adaptation, calibration.

    python scripts/analyze_runs.py runs/mnist_usps/mnist_usps/source_only/seed0 runs/mnist_usps/mnist_usps/cdan_e/seed0 \
        --data-root ../shared/data --out paper_results/analysis/mnist_usps

Each run folder needs results.json (its config rebuilds the benchmark and model) and its final weights (model.safetensors, or model.pt from older runs).
The first run is the "before" panel (normally source_only). Writes <out>.md/.csv (method, target acc, proxy
A-distance on bottleneck features of source test vs target test, ECE, the run's training command and this
script's command), <out>_tsne.png and <out>_reliability.png.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.analysis.domain import proxy_a_distance, reliability_png, tsne_png  # noqa: E402
from dacl.engine.results import atomic_write_text, git_commit, hardware  # noqa: E402
from dacl.engine.trainer import resolve_device, seed_everything  # noqa: E402
from dacl.engine.weights import load_weights, run_weights  # noqa: E402
from dacl.errors import ConfigError  # noqa: E402
from dacl.experiment import build_benchmark, build_method  # noqa: E402
from dacl.metrics import accuracy, expected_calibration_error, predict_in_batches  # noqa: E402


def load_run(run_dir: Path, data_root: str | None, device: torch.device):
    res_path, weights = run_dir / "results.json", run_weights(run_dir)
    if not res_path.is_file() or not weights.is_file():
        raise ConfigError(f"{run_dir} needs results.json and model.safetensors (finished with trainer.save_model=true)")
    res = json.loads(res_path.read_text())
    cfg = dict(res["config"])
    if data_root:
        cfg["data_root"] = data_root
    data = build_benchmark(cfg, device)
    seed_everything(int(cfg["seed"]))
    method = build_method(cfg, data).to(device)
    method.model.load_state_dict(load_weights(weights))
    method.eval()
    return res, data, method


@torch.no_grad()
def outputs(method, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats = predict_in_batches(method.model.features, x)
    return feats, method.model.head(feats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    commit = git_commit()  # before anything is written: the outputs themselves would make the tree dirty
    device = resolve_device(args.device)
    command = f"python scripts/analyze_runs.py {shlex.join(sys.argv[1:])}"
    rows, panels, curves = [], {}, {}
    for run_dir in args.runs:
        res, data, method = load_run(run_dir, args.data_root, device)
        fs, _ = outputs(method, data.source_test[0])
        ft, logits_t = outputs(method, data.target_test[0])
        yt = data.target_test[1]
        name = res["method"] + (f" [{res['variant']}]" if res.get("variant") else "") + f" seed{res['seed']}"
        rows.append({"benchmark": res["benchmark"], "task": res["task"], "method": name,
                     "target_acc": 100 * accuracy(logits_t, yt), "proxy_a_distance": proxy_a_distance(fs, ft),
                     "target_ece": 100 * expected_calibration_error(logits_t, yt), "run_dir": str(run_dir),
                     "run_command": res.get("command") or "", "command": command})
        panels[f"{name}: acc {rows[-1]['target_acc']:.1f}%, PAD {rows[-1]['proxy_a_distance']:.2f}"] = (fs.cpu(), ft.cpu(), yt.cpu())
        curves[name] = (logits_t.cpu(), yt.cpu())
        print(f"{name}: target acc {rows[-1]['target_acc']:.2f}  proxy A-distance {rows[-1]['proxy_a_distance']:.3f}  "
              f"ECE {rows[-1]['target_ece']:.2f}", flush=True)
    out = Path(args.out)
    tsne_png(panels, out.with_name(out.name + "_tsne.png"))
    reliability_png(curves, out.with_name(out.name + "_reliability.png"))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    md = [f"# Feature analysis: {rows[0]['task']}", "",
          "Proxy A-distance (PAD) between source-test and target-test bottleneck features (linear domain classifier, "
          "balanced halves; 0 = indistinguishable, 2 = separable), target accuracy and ECE (%) of the final model "
          "(no selection). Plots: t-SNE of features (source blue, target coloured by true class; labels used for "
          "colour only) and a reliability diagram.", "",
          "| method | target acc | PAD | ECE |", "|---|---|---|---|"]
    md += [f"| {r['method']} | {r['target_acc']:.2f} | {r['proxy_a_distance']:.3f} | {r['target_ece']:.2f} |" for r in rows]
    md += ["", f"![t-SNE]({out.name}_tsne.png)", "", f"![reliability]({out.name}_reliability.png)", "",
           "## Provenance", "", f"- command: `{command}`",
           *[f"- {r['method']} trained by: `{r['run_command']}`" for r in rows],
           f"- code: {commit.get('commit', '?')[:12]}{' (dirty)' if commit.get('dirty') else ''}; runs: "
           + ", ".join(f"`{r['run_dir']}`" for r in rows),
           f"- hardware: {hardware(device)}"]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print(f"wrote {out}.md/.csv, {out.name}_tsne.png, {out.name}_reliability.png")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        sys.exit(f"analyze_runs: error: {exc}")
