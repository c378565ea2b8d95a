#!/usr/bin/env bash
# torchrun/DDP check (issue 7): DANN on MNIST -> USPS with 2 processes (gloo on CPU, NCCL on GPU) against the
# 1-process runs of the digits table, same global batch (128 + 128) and recipe, 3 seeds each.
#   DATA_ROOT=../shared/data bash scripts/compare_ddp.sh     (~10 min per seed on 2 CPU cores)
# Writes paper_results/scale/ddp_dann_mnist_usps.{md,csv}. Needs the 1-process runs in runs/mnist_usps (reproduce_digits.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
SEEDS=${SEEDS:-0,1,2}
NPROC=${NPROC:-2}
make install >/dev/null
for seed in ${SEEDS//,/ }; do
  .venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m dacl run +experiment=mnist_usps method=dann seed="$seed" \
    tag=ddp data_root="$DATA_ROOT" trainer.threads=1
done
.venv/bin/python scripts/collect.py runs/mnist_usps/mnist_usps/dann runs/ddp --out paper_results/scale/ddp_dann_mnist_usps \
  --title "DANN MNIST->USPS: 1 process vs $NPROC torchrun processes (same global batch)" \
  --note "Same recipe (configs/experiment/mnist_usps.yaml), global batch 128 source + 128 target; with $NPROC processes each takes a contiguous slice of the same global batch and DDP averages gradients. On CPU (gloo) BatchNorm normalises per process (torch has no CPU SyncBatchNorm) and dropout masks differ, so the runs are not bit-identical; the question is whether they agree within seed noise." \
  --note "The 1-process rows are the digits-table runs (their commits are listed under Provenance)."
