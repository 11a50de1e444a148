"""Certification command line (the same as `unicr-certify`).

python certify.py radius --noise gennormal --beta 1.5 --sigma 1 --norm 2 --dim 3072 --pa 0.9
python certify.py curve --noise laplace --norm 1 2 inf --dim 3072 --out outputs/curves
python certify.py certify --ckpt outputs/<run>/checkpoints/last.ckpt --out results/run.tsv
"""

import sys

from unicr_pl.commands.certify_cli import main

if __name__ == "__main__":
    sys.exit(main())
