"""How well does each label-free validator pick checkpoints? (Musgrave et al. 2022's question, on dacl runs.)

Input: successful run results whose ``history`` holds, per evaluation step, ``score/<validator>`` and the true
``target_test_acc``. Two views per validator:
- rank correlation (Spearman) between its score and target accuracy over every checkpoint of every run, and the
  mean of the within-run correlations (does it rank steps of one run well?);
- model selection, DomainBed style: for each method and seed, among all checkpoints of all its hyper-parameter
  trials, take the one the validator scores best and report that checkpoint's target accuracy (averaged over
  seeds); the oracle takes the best target accuracy (uses target labels; shown only as the ceiling).
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from scipy.stats import spearmanr


def validators_in(results: list[dict[str, Any]]) -> list[str]:
    """Validators scored at every checkpoint of every run (a validator missing anywhere is left out)."""
    names = None
    for r in results:
        for rec in r["history"]:
            have = {k.split("/", 1)[1] for k in rec if k.startswith("score/")}
            names = have if names is None else names & have
    return sorted(names or [], key=lambda n: (n != "source_val", n))  # the classic protocol first


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def study(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per validator: pooled and mean within-run Spearman, and the target accuracy it selects per method."""
    names = validators_in(results)
    pools: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)  # (method, seed) -> checkpoints of all trials
    for r in results:
        pools[(r["method"], r.get("seed", 0))].extend(r["history"])
    methods = sorted({m for m, _ in pools})
    out: dict[str, Any] = {"validators": {}, "methods": methods, "n_runs": len(results),
                           "n_checkpoints": sum(len(r["history"]) for r in results)}
    for v in [*names, "oracle"]:
        key = f"score/{v}" if v != "oracle" else "target_test_acc"
        pooled_x = [rec[key] for r in results for rec in r["history"]]
        pooled_y = [rec["target_test_acc"] for r in results for rec in r["history"]]
        within = [_spearman([rec[key] for rec in r["history"]], [rec["target_test_acc"] for rec in r["history"]])
                  for r in results]
        within = [w for w in within if not math.isnan(w)]
        picks: dict[str, list[float]] = defaultdict(list)
        for (m, _), recs in sorted(pools.items(), key=lambda kv: str(kv[0])):
            picks[m].append(max(recs, key=lambda rec: rec[key])["target_test_acc"])
        selected = {m: statistics.fmean(picks[m]) for m in methods}
        out["validators"][v] = {
            "spearman_pooled": _spearman(pooled_x, pooled_y),
            "spearman_within_run": statistics.fmean(within) if within else float("nan"),
            "selected_acc": selected,
            "mean_selected_acc": statistics.fmean(selected.values()),
        }
    oracle = out["validators"]["oracle"]["mean_selected_acc"]
    for v, d in out["validators"].items():
        d["gap_to_oracle"] = oracle - d["mean_selected_acc"]
    return out
