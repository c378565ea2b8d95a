#!/usr/bin/env bash
# The first thing to run on a GPU machine: AMP bf16 and channels-last on the digits DANN step (against the committed
# CPU figure), a 2-process NCCL run with SyncBatchNorm when two GPUs exist, and TLlib's Office-31 recipe for 200 steps
# on a synthetic tree. Prints one table (dacl/analysis/gpu_check.py); exit 0 when every check passed.
#   bash scripts/gpu_check.sh            # or: bash scripts/gpu_check.sh --device cpu --steps 20 --recipe-steps 4
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m dacl.analysis.gpu_check "$@"
