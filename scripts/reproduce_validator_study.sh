#!/usr/bin/env bash
# Validator study (issue 7): a DomainBed-style sweep on MNIST -> USPS whose every checkpoint is scored by every
# label-free validator, then paper_results/digits/validator_study_mnist_usps.{md,csv}; and the MNIST -> MNIST-M study
# from the digits table's own runs (experiment=mnist_mnistm_dann_net, every validator scored; made by
# scripts/reproduce_digits.sh, or read from the table's committed .runs.jsonl when those run folders are absent).
#   4 methods x 4 hyper-parameter trials (hparams_seed 0 = defaults, 1-3 random draws) x 1 seed, 2,000 iterations,
#   evaluated every 200. ~1.7 h on one CPU core; minutes on a GPU. Override with METHODS / TRIALS / SEEDS / STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
METHODS=${METHODS:-dann,cdan,mmd,source_only}
TRIALS=${TRIALS:-0,1,2,3}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-2000}
make install >/dev/null
.venv/bin/dacl run -m +experiment=mnist_usps tag=validator_study method="$METHODS" hparams_seed="$TRIALS" seed="$SEEDS" \
  trainer.max_steps="$STEPS" trainer.eval_every=200 data_root="$DATA_ROOT" \
  'trainer.validators=[source_val,entropy,im,bnm,snd,dev]'
.venv/bin/python scripts/validator_study.py runs/validator_study --out paper_results/digits/validator_study
mm=runs/mnist_mnistm_dann_net
[ -d "$mm" ] || mm=paper_results/digits/mnist_mnistm_dann_net.runs.jsonl
.venv/bin/python scripts/validator_study.py "$mm" --out paper_results/digits/validator_study \
  --note "The runs of paper_results/digits/mnist_mnistm_dann_net.md: every method at its default hyper-parameters (one trial), 3 seeds, 5,000 iterations evaluated every 250 (20 checkpoints per run)."
