#!/usr/bin/env bash
# Regenerates the table of docs/attack.md: trains LeNet on the digits under Gaussian noise
# (sigma 0.25), certifies 20 test images, attacks the certified ones at 1, 2 and 4 x radius.
set -euo pipefail
out=${1:-outputs/attack-digits}
mkdir -p "$out"
python train.py --epochs 5 --sigma 0.25 --trainer.logger false \
    --trainer.default_root_dir "$out" --certification.max_samples 5 --certification.n 100
ckpt=$(find "$out" -name '*.ckpt' | sort | tail -1)
python certify.py certify --ckpt "$ckpt" --n0 50 --n 1000 --alpha0 0.001 --max 20 \
    --out "$out/certify.tsv" --trainer.enable_progress_bar false
python certify.py attack --ckpt "$ckpt" --results "$out/certify.tsv" --out "$out/attack" \
    --norm 1 2 inf --scale 1 2 4 --attack pgd apgd --m 16 --steps 10
