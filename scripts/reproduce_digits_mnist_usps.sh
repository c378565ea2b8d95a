#!/usr/bin/env bash
# Reproduces paper_results/digits/mnist_usps.{md,csv}: MNIST->USPS, LeNet, source_only vs DANN, 3 seeds,
# plus the pre-declared DANN variant with TLlib's GRL warm start. ~55 min on 2 CPU cores (5,000 iterations
# per run). DATA_ROOT must hold mnist.npz and usps.npz (or torchvision's files).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
SEEDS=${SEEDS:-0,1,2}
make install
.venv/bin/dacl run -m +experiment=mnist_usps method=source_only,dann seed="$SEEDS" data_root="$DATA_ROOT"
.venv/bin/dacl run -m +experiment=mnist_usps_tllib_grl seed="$SEEDS" data_root="$DATA_ROOT"
.venv/bin/python scripts/collect.py runs/mnist_usps runs/mnist_usps_tllib_grl --out paper_results/digits/mnist_usps \
  --title "MNIST -> USPS (LeNet, 5,000 iterations)" --paper-values scripts/paper_values/digits.json
