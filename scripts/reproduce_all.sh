#!/usr/bin/env bash
# Every table in paper_results/, from the committed code:
#   bash scripts/reproduce_all.sh            # the full tables (hours on CPU; see each script's header for its cost)
#   bash scripts/reproduce_all.sh --quick    # a miniature of every pipeline in minutes on CPU, written under
#                                            # runs/quick/ (never over paper_results/): checks that all of it runs
# DATA_ROOT (default ../shared/data) holds the benchmark files; without it --quick uses the offline package digits
# and skips the steps that need real data, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
DATA_ROOT=${DATA_ROOT:-../shared/data}
make install >/dev/null
PY=.venv/bin/python
DACL=.venv/bin/dacl
HAVE_DATA=0
[ -f "$DATA_ROOT/mnist.npz" ] && [ -f "$DATA_ROOT/usps.npz" ] && HAVE_DATA=1
step() { echo; echo "=== $* ==="; }

if [ "$QUICK" = 0 ]; then
  [ "$HAVE_DATA" = 1 ] || { echo "reproduce_all: $DATA_ROOT has no mnist.npz/usps.npz; set DATA_ROOT" >&2; exit 2; }
  step "digits DA (issue 3)";          DATA_ROOT=$DATA_ROOT bash scripts/reproduce_digits.sh
  step "Office-Caltech SURF";          $PY scripts/reproduce_office_caltech_surf.py --data-root "$DATA_ROOT"
  step "TTA corruptions";              $PY scripts/reproduce_tta_corruptions.py --data-root "$DATA_ROOT"
  step "TTA digit shifts";             $PY scripts/reproduce_tta_digits.py --data-root "$DATA_ROOT" --tasks usps,mnistm --seeds 0,1,2
  step "continual Split MNIST";        $PY scripts/reproduce_continual.py --data-root "$DATA_ROOT" --streams split_mnist
  step "dacl vs Avalanche";            $PY scripts/compare_avalanche.py --data-root "$DATA_ROOT"
  step "throughput";                   $PY scripts/bench_throughput.py --data-root "$DATA_ROOT"
  step "validator study (M->U sweep)"; DATA_ROOT=$DATA_ROOT bash scripts/reproduce_validator_study.sh
  step "fine-tuning baselines";        $PY scripts/reproduce_finetune.py --data-root "$DATA_ROOT"
  step "fine-tuning baselines, MNIST-M"; $PY scripts/reproduce_finetune.py --data-root "$DATA_ROOT" --tasks mnistm --parts table --out paper_results/finetune/mnistm
  step "fine-tuning baselines, text";  $PY scripts/reproduce_finetune_text.py --data-root "$DATA_ROOT"
  exit 0
fi

OUT=runs/quick/paper_results
rm -rf runs/quick
mkdir -p "$OUT"
VALIDATORS='trainer.validators=[source_val,entropy,im,bnm,snd,dev]'
if [ "$HAVE_DATA" = 1 ]; then
  BENCH=(+experiment=mnist_usps "data_root=$DATA_ROOT"); DATA_ARG=(--data-root "$DATA_ROOT")
else
  BENCH=(benchmark=digits_offline); DATA_ARG=()
fi

step "digits DA: 4 methods x 2 seeds x 60 steps, plus one configuration that fails on purpose"
$DACL run -m "${BENCH[@]}" tag=quick method=source_only,dann,cdan_e,mmd seed=0,1 trainer.max_steps=60 \
  trainer.eval_every=20 trainer.progress=false "$VALIDATORS"
$DACL run -m "${BENCH[@]}" tag=quick method=dann seed=0 trainer.max_steps=60 trainer.batch_size=1000000 \
  trainer.eval_every=20 trainer.progress=false "$VALIDATORS" || true   # fails (batch larger than the data): the table must list it, not average it
$PY scripts/collect.py runs/quick --out "$OUT/digits" --title "quick digits DA (60 steps; not a result)"
$PY scripts/validator_study.py runs/quick --out "$OUT/validator_study"
first_run=$(find runs/quick -path '*source_only*' -name results.json | head -1 | xargs dirname)
second_run=$(find runs/quick -path '*dann*' -name results.json | head -1 | xargs dirname)
$PY scripts/analyze_runs.py "$first_run" "$second_run" "${DATA_ARG[@]}" --out "$OUT/analysis"

step "continual: Split MNIST (offline 5k digits), naive / EWC / replay, 40 steps per task"
$PY scripts/reproduce_continual.py --streams split_mnist --scenarios class --strategies naive,ewc,replay --seeds 0 --jobs 1 \
  --tag quick/continual --out "$OUT/continual" stream.dataset=mnist_5k train.steps_per_task=40

step "throughput: 20 steps per method"
$PY scripts/bench_throughput.py --steps 20 --warmup 5 --methods source_only dann --out "$OUT/throughput" "${DATA_ARG[@]}"

if [ "$HAVE_DATA" = 1 ]; then
  step "Office-Caltech SURF: CORAL only"
  $PY scripts/reproduce_office_caltech_surf.py --data-root "$DATA_ROOT" --adapters none coral --out "$OUT/office_caltech_surf"
  step "TTA: 100-step source model, 500 corrupted test images, 1 epoch on USPS"
  $PY scripts/reproduce_tta_corruptions.py --data-root "$DATA_ROOT" --n-test 500 --source-run runs/quick/tta_source \
    --out "$OUT/tta_mnist_c" trainer.max_steps=100 trainer.eval_every=100
  $PY scripts/reproduce_tta_digits.py --data-root "$DATA_ROOT" --tasks usps --epochs 1 --runs runs/quick --out "$OUT/tta" \
    trainer.max_steps=100 trainer.eval_every=100
  step "fine-tuning: 20-step pre-training and fine-tuning, one seed, curve at 10 labels and all"
  $PY scripts/reproduce_finetune.py --data-root "$DATA_ROOT" --tasks usps --steps 20 --vit-steps 20 --pretrain-steps 20 --curve-sizes 10,all \
    --curve-steps 20 --seeds 0 --runs runs/quick/finetune --out "$OUT/finetune"
  if [ -f "$DATA_ROOT/blitzer_sorted_data_acl_labeled.tar.xz" ]; then
    step "fine-tuning on text: LoRA on MiniLM, books->kitchen, 4 steps"
    $PY scripts/reproduce_finetune_text.py --data-root "$DATA_ROOT" --pairs books:kitchen --methods lora --steps 4 --seeds 0 \
      --runs runs/quick/finetune_text --out "$OUT/finetune/text"
  fi
else
  echo "(Office-Caltech, TTA, fine-tuning: skipped, $DATA_ROOT has no benchmark files)"
fi
echo; echo "quick reproduction finished: $OUT"
