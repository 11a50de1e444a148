#!/usr/bin/env bash
# Training methods compared on MNIST with LeNet (docs/training-methods.md): noise_aug,
# consistency, macer, smoothadv x {Gaussian, generalised normal beta = 0.75} x sigma in
# {0.25, 0.5}, the same epochs, batches and seed for all; each model certified on 200 test
# images (every 50th; n0 = 50, n = 500, alpha0 = 0.001, l2), then one table (proven / family
# radius) and the time per step of each method relative to noise_aug, measured side by side.
# Sized for about 35 minutes of one CPU core (more wall time on a shared machine). Resumable:
# a trained run (last.ckpt) is not trained again, and certification resumes its file. MNIST
# is read from $UNICR_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/compare_methods}
export UNICR_DATA=${UNICR_DATA:-data} WANDB_MODE=${WANDB_MODE:-disabled}

# The same for every method: 5 epochs of 40 batches of 128 training images (the first 5120 of
# each epoch's shuffle), LeNet, SGD at lr 0.05, divided by 10 after epoch 3 (MACER's hinge
# starts after the first learning-rate drop, as in its reference runs); no certification
# callback work (one sample).
common=(--config configs/data/mnist.yaml --config configs/model/lenet.yaml
        --data.batch_size 128 --epochs 5 --trainer.limit_train_batches 40
        --model.lr 0.05 --model.lr_step_size 3
        --trainer.limit_val_batches 4 --certification.every_n_epochs 100
        --certification.max_samples 1 --certification.n 100
        --trainer.enable_progress_bar false --trainer.logger false)

# Method settings: the papers' MNIST values, cheaper where the budget needs it (docs).
method_args() {  # method sigma -> extra flags
  case $1 in
    noise_aug) echo "--method noise_aug" ;;
    consistency) # Jeong & Shin's MNIST lbd: 10 at sigma 0.25, 5 at 0.5 (m = 2, eta = 0.5)
      if [ "$2" = 0.25 ]; then echo "--method consistency"
      else echo '--method consistency --model.method_args {"lbd":5.0}'; fi ;;
    macer) # m = 4 (paper: 16), lbd = 2 (paper: 16, which collapsed these short runs: docs);
      # gamma 8, beta 16; the hinge from epoch 3, after the learning-rate drop
      echo '--method macer --m 4 --model.method_args {"start_epoch":3,"lbd":2.0}' ;;
    smoothadv) # m = 2, 2 PGD steps (release: m = 4, 10 steps), eps 255/256, warm-up 2 epochs
      echo '--method smoothadv --m 2 --model.method_args {"steps":2,"warmup":2}' ;;
  esac
}

for noise in gaussian gennormal; do
  for sigma in 0.25 0.5; do
    setting="$noise-sigma$sigma"
    flags=(--noise "$noise" --sigma "$sigma")
    [ "$noise" = gennormal ] && flags+=(--beta 0.75) && setting="gennormal0.75-sigma$sigma"
    mkdir -p "$OUT/$setting/runs"
    for method in noise_aug consistency macer smoothadv; do
      run="$OUT/$setting/runs/$method"
      if [ ! -f "$run/checkpoints/last.ckpt" ]; then
        # shellcheck disable=SC2046  # method_args is a list of words
        /usr/bin/time -f "train $setting $method: %e s" python train.py "${common[@]}" \
          "${flags[@]}" $(method_args "$method" "$sigma") --run_dir "$run" >"$run.log" 2>&1 \
          || { tail -5 "$run.log"; exit 1; }
        tail -1 "$run.log"
      fi
      python certify.py certify --ckpt "$run/checkpoints/last.ckpt" --split test --skip 50 \
        --n0 50 --n 500 --alpha0 0.001 --norms 2 --seed 0 \
        --trainer.enable_progress_bar false --out "$OUT/$setting/$method.tsv" 2>&1 | tail -1
    done
    for kind in proven family; do
      python certify.py analyze "$OUT/$setting"/{noise_aug,consistency,macer,smoothadv}.tsv \
        --norm 2 --radii 0 0.1 0.2 0.3 0.5 0.75 1 --radius "$kind" \
        --out "$OUT/$setting/analyze-$kind" >/dev/null
    done
  done
done
python benchmarks/methods.py table "$OUT"
if [ ! -s "$OUT/time_per_step.txt" ]; then
  python benchmarks/methods.py time --batch 128 >"$OUT/time_per_step.tmp"
  mv "$OUT/time_per_step.tmp" "$OUT/time_per_step.txt"
fi
cat "$OUT/time_per_step.txt"
