#!/usr/bin/env bash
# Reproduces paper_results/digits/<task>.{md,csv} for the digits DA table (issue 3):
#   TASKS: mnist_usps usps_mnist mnist_mnistm_dann_net mnist_mnistm     METHODS: all nine below     SEEDS: 0,1,2
# Cost on 2 CPU cores, 5,000 iterations per run: ~3 min (source_only) to ~9 min (cdan) per LeNet run, i.e. ~2 h per
# task for 9 methods x 3 seeds; mnist_mnistm_dann_net (the DANN paper's network) ~10-20 min per run, ~3.5 h;
# mnist_mnistm (cnn32) ~1.5-2 h per run, ~40 h: leave it to a GPU. Minutes on a GPU.
# Override e.g. TASKS=mnist_usps METHODS=cdan_e SEEDS=0.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
TASKS=${TASKS:-mnist_usps usps_mnist mnist_mnistm_dann_net mnist_mnistm}
METHODS=${METHODS:-source_only,dann,cdan,cdan_e,mmd,coral,deepjdot,self_training,adamatch}
SEEDS=${SEEDS:-0,1,2}
make install
for task in $TASKS; do
  validators=()  # U->M and MNIST-M runs also feed the validator study (scripts/validator_study.py): score every validator
  case "$task" in usps_mnist|mnist_mnistm*) validators=('trainer.validators=[source_val,entropy,im,bnm,snd,dev]') ;; esac
  for seed in ${SEEDS//,/ }; do  # seed-major: every method gets seed 0 before any gets seed 1
    .venv/bin/dacl run -m +experiment="$task" method="$METHODS" seed="$seed" data_root="$DATA_ROOT" "${validators[@]}"
  done
  extra=()
  if [ "$task" = mnist_usps ]; then  # the pre-declared DANN variant with TLlib's GRL warm start
    .venv/bin/dacl run -m +experiment=mnist_usps_tllib_grl seed="$SEEDS" data_root="$DATA_ROOT"
    extra+=(runs/mnist_usps_tllib_grl)
  fi
  # pre-declared variants, same tag (runs/$task), each collected into a table of its own
  # (paper_results/digits/<task>_<variant>.md) and left out of the main one: the DeepJDOT authors' weights,
  # CORAL's weight by the paper's rule, self-training with rounds + class-balanced thresholds
  own=()  # their `variant:` names, i.e. the [name] of their rows
  for variant in deepjdot_authors coral_balanced self_training_rounds; do
    config="configs/experiment/${task}_${variant}.yaml"
    [ -f "$config" ] || continue
    .venv/bin/dacl run -m +experiment="${task}_${variant}" seed="$SEEDS" data_root="$DATA_ROOT" "${validators[@]}"
    name=$(sed -n 's/^variant: *//p' "$config")
    own+=("$name")
    case "$variant" in
      deepjdot_authors) what="DeepJDOT with the authors' weights" ;;
      coral_balanced) what="Deep CORAL with the paper's weighting rule" ;;
      self_training_rounds) what="self-training with teacher rounds and class-balanced thresholds" ;;
    esac
    out="paper_results/digits/${task}_${variant}"
    vroots=()
    [ -f "$out.runs.jsonl" ] && vroots+=("$out.runs.jsonl")
    .venv/bin/python scripts/collect.py "${vroots[@]}" "runs/$task" --variants "$name" --out "$out" \
      --title "Digits DA: $task, $what (5,000 iterations)" --paper-values scripts/paper_values/digits.json \
      --notes-file scripts/paper_values/digits_notes.md  # notes: the bullets tagged [<task>_<variant>]
  done
  drop=()
  [ ${#own[@]} -gt 0 ] && drop=(--drop-variants "$(IFS=,; echo "${own[*]}")")
  title_extra=""
  [ "$task" = mnist_mnistm_dann_net ] && title_extra=", the DANN paper's network"
  roots=()
  archive="paper_results/digits/$task.runs.jsonl"   # committed records of runs made on earlier machines;
  [ -f "$archive" ] && roots+=("$archive")           # listed first, so a run folder at the same path supersedes it
  .venv/bin/python scripts/collect.py "${roots[@]}" "runs/$task" "${extra[@]}" --out "paper_results/digits/$task" \
    --title "Digits DA: $task (5,000 iterations${title_extra:-})" --paper-values scripts/paper_values/digits.json \
    --notes-file scripts/paper_values/digits_notes.md "${drop[@]}"  # notes: the bullets tagged [$task]
done
