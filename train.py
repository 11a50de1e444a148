"""Train a base classifier under noise with the Lightning CLI, then print its certified accuracy.

    python train.py                                   # digits, Gaussian sigma 0.25, ~30 s on CPU
    python train.py --noise gennormal --beta 0.75 --sigma 0.5
    python train.py --config configs/experiments/mnist_mlp.yaml --trainer.max_epochs 20
    python train.py --beta=0.75 --sigma=0.5           # the form `wandb agent` passes
    python train.py --ckpt_path outputs/<run>/checkpoints/last.ckpt   # resume in the same folder

The same as the `unicr-train` command; see unicr_pl/commands/train.py.
"""

import sys

from unicr_pl.commands.train import SHORT, UniCRCLI, build_cli, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(run())
