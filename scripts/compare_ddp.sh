#!/usr/bin/env bash
# torchrun/DDP check (issue 7): DANN trained by 1 process and by NPROC torchrun processes (gloo on CPU, NCCL on
# GPU) with the same global batch and recipe, SEEDS seeds each, collected into one table.
#   DATA_ROOT=../shared/data bash scripts/compare_ddp.sh                      # MNIST->USPS, 5,000 steps (~1 h on 2 CPU cores)
#   BENCH=benchmark=digits_offline STEPS=500 NAME=digits_offline bash scripts/compare_ddp.sh   # offline, minutes
# Writes paper_results/scale/ddp_dann_<NAME>.{md,csv}.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
BENCH=${BENCH:-+experiment=mnist_usps data_root=$DATA_ROOT}
STEPS=${STEPS:-5000}
NAME=${NAME:-mnist_usps}
SEEDS=${SEEDS:-0,1,2}
NPROC=${NPROC:-2}
make install >/dev/null
read -r -a bench <<< "$BENCH"
common=("${bench[@]}" method=dann tag="ddp_$NAME" trainer.max_steps="$STEPS" trainer.threads=1 trainer.progress=false)
rm -rf "runs/ddp_$NAME"
for seed in ${SEEDS//,/ }; do
  .venv/bin/dacl run "${common[@]}" seed="$seed" hydra.run.dir="runs/ddp_$NAME/1proc/seed$seed"
  .venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m dacl run "${common[@]}" seed="$seed" \
    hydra.run.dir="runs/ddp_$NAME/${NPROC}proc/seed$seed"
done
.venv/bin/python scripts/collect.py "runs/ddp_$NAME" --out "paper_results/scale/ddp_dann_$NAME" \
  --title "DANN $NAME: 1 process vs $NPROC torchrun processes (same global batch, $STEPS steps)" \
  --note "Same recipe and global batch; with $NPROC processes each takes a contiguous slice of every global batch and DDP averages the gradients. On CPU (gloo) BatchNorm normalises with per-process statistics (torch has no CPU SyncBatchNorm) and dropout masks differ, so the runs are not bit-identical; the question is whether they agree within seed noise. (Without BatchNorm and dropout they agree to float precision: tests/test_distributed.py.)"
