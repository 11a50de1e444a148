#!/usr/bin/env bash
# The README's MNIST reproduction (paper Sec. 5.3: C-OPT, Table 2; I-OPT, Table 3 style),
# with the settings that fit 2 CPU cores in about two hours. MNIST is read from $UNICR_DATA
# (torchvision layout: $UNICR_DATA/MNIST/raw; default ./data; no download). Re-running skips the
# C-OPT runs that finished and resumes the certification files.
set -euo pipefail
OUT=${OUT:-outputs}
export UNICR_DATA=${UNICR_DATA:-data}

# C-OPT: generalised normal noise, beta in {0.5, ..., 3} x sigma in {0.12, 0.25, 0.5, 1}: one MLP
# per point (6 epochs), each certified at the end on its 1000 held-out validation images
# (n0 = 50, n = 1000 draws, alpha0 = 0.001), radii for l1, l2 and l_inf.
python -m unicr_pl.copt configs/sweeps/copt_mnist.yaml --out "$OUT/copt_mnist" \
  --trainer.max_epochs=6 --model.lr_step_size=4 --certification.every_n_epochs=100 \
  --certification.max_samples=1000 --certification.n=1000 \
  --trainer.enable_progress_bar=false --trainer.logger=false

# I-OPT against the fixed training noise, on the Gaussian model of the grid (beta = 2, sigma =
# 0.25) and every 50th test image (200). n = 10,000 draws bound p_A for every variant.
ckpt="$OUT/copt_mnist/beta=2.0_sigma=0.25/checkpoints/last.ckpt"
iopt="$OUT/iopt_mnist"
mkdir -p "$iopt"
common=(--ckpt "$ckpt" --split test --skip 50 --n0 100 --n 10000 --seed 0
        --trainer.enable_progress_bar false)
python certify.py certify "${common[@]}" --norms 2 1 inf --out "$iopt/fixed.tsv"
python certify.py certify "${common[@]}" --norms 2 1 inf --iopt true --out "$iopt/iopt_l2.tsv"
python certify.py certify "${common[@]}" --norms 2 1 inf --iopt true --iopt_sound false \
  --out "$iopt/iopt_l2_paper.tsv"
python certify.py certify "${common[@]}" --norms 1 2 inf --iopt true --out "$iopt/iopt_l1.tsv"
for norm in 1 2; do
  python certify.py analyze "$iopt"/fixed.tsv "$iopt"/iopt_l*.tsv --norm "$norm" --out "$iopt/analyze"
done
