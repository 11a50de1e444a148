"""The certification of `benchmarks/certify.py` on CUDA: images per second, forward share, host
synchronisations, and the reproducibility checks that only an accelerator can run.

    python benchmarks/certify_device.py [--images 8] [--n 10000] [--quick]

With a GPU: LeNet (1x28x28) under Gaussian, gennormal(0.75), expmix(0.5) and a custom noise
at 32-true; ResNet-20 (3x32x32) under Gaussian at 32-true, bf16-mixed and 16-mixed, with and
without channels-last. Then, on the device: (1) the packed passes of several images give every
image the counts of certifying it alone (32-true), (2) the same seed gives the same counts
twice, (3) bf16-mixed / 16-mixed counts stay close to 32-true. Without a GPU it says so and
runs a small version of the same on CPU (30 s here). Sized for a few minutes on one GPU, not yet
run on one. A fresh machine builds no radius curve: non-Gaussian rows time the smoothing alone
(`measure(full=False)`).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from unicr_pl.smoothing import SmoothedClassifier

# The measurement is the CPU benchmark's own (run from the repository root).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from certify import HEADER, NOISES, make_model, measure, table_row  # noqa: E402


def settings(small: bool) -> list[tuple[str, str, str, bool]]:
    """(backbone, noise, precision, channels_last) rows of the table."""
    lenet = [("lenet", noise, "32-true", False) for noise in ("gaussian", "gennormal")]
    if small:
        return [*lenet, ("lenet", "gaussian", "bf16-mixed", False)]
    lenet += [("lenet", noise, "32-true", False) for noise in ("expmix", "custom")]
    lenet.append(("lenet", "gaussian", "bf16-mixed", False))
    resnet = [
        ("resnet20", "gaussian", precision, channels_last)
        for precision in ("32-true", "bf16-mixed", "16-mixed")
        for channels_last in (False, True)
    ]
    return lenet + resnet


def reproducibility(device: torch.device, n: int) -> list[str]:
    """The checks (1)-(3) of the module docstring, as lines of text."""
    model = make_model("lenet", device)
    noise = NOISES["gennormal"]()
    x = torch.rand(6, 1, 28, 28, device=device)
    idx = [5, 1, 70, 3, 12, 9]

    def counts(batch: int, precision: str = "32-true", xs=x, ids=idx) -> np.ndarray:
        g = SmoothedClassifier(
            model.backbone, noise, 10, model.normalize, batch, precision=precision
        )
        return g.certify(xs, 100, n, 0.001, seed=7, indices=ids).counts

    packed = counts(1000)
    alone = np.concatenate([counts(1000, xs=x[i : i + 1], ids=[k]) for i, k in enumerate(idx)])
    lines = [
        f"(1) packed vs alone (32-true, n={n}): {int((packed != alone).sum())} of "
        f"{packed.size} counts differ (0 expected; a difference means the classifier's "
        "logits depend on the batch composition on this device)",
        f"(2) same seed twice: {'identical' if np.array_equal(packed, counts(1000)) else 'DIFFER'}",
    ]
    # float16 autocast on CPU is ~10x slower than float32 (no use case): CUDA only.
    for precision in ("bf16-mixed", "16-mixed") if device.type == "cuda" else ("bf16-mixed",):
        other = counts(1000, precision)
        lines.append(
            f"(3) {precision} vs 32-true: max |count difference| {int(abs(other - packed).max())}"
            f" of n = {n} (top-class agreement "
            f"{np.mean(other.argmax(1) == packed.argmax(1)):.0%})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="3 LeNet rows, n = 1000")
    args = parser.parse_args()
    if torch.cuda.is_available():
        device, images, n = torch.device("cuda"), args.images, args.n
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        device, images, n = torch.device("cpu"), 2, 1000
        print("note: no CUDA device here; running a small version of the same on CPU")
    n = 1000 if args.quick else n
    print(HEADER)
    for backbone, noise, precision, cl in settings(args.quick or device.type == "cpu"):
        r = measure(
            backbone, noise, device, images, 100, n, 1000, precision, cl, reps=2,
            full=noise == "gaussian",  # closed-form radii: no curve to build first
        )  # fmt: skip
        print(table_row(r), flush=True)
    for line in reproducibility(device, min(n, 2000)):
        print(line, flush=True)


if __name__ == "__main__":
    main()
