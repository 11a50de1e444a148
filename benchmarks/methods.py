"""Training methods side by side: time per step relative to noise_aug, and the results table.

    python benchmarks/methods.py time [--batch 128] [--steps 4] [--rounds 3] [--device cpu]
    python benchmarks/methods.py table outputs/compare_methods   # after scripts/compare_methods.sh

`time` runs UniCRModule's one training step (forward, loss, backward, SGD) of every method on
MNIST-shaped batches, the methods interleaved round by round so that load drifts hit them
alike, and prints the median seconds per step and its ratio to noise_aug: with the same
batches per epoch, that is the ratio of the time per epoch. Two settings per method: the
papers' defaults and the cheaper ones of scripts/compare_methods.sh.

`table` merges the `certify.py analyze` CSVs that scripts/compare_methods.sh writes (one per
noise and radius kind) into one markdown table: certified accuracy at each l2 radius and the
ACR, the proven radius (`radius`) and the family value (`radius_family`) as "proven / family".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

# (label, method, m, method_args): the papers' defaults, then the comparison's settings.
CASES = [
    ("noise_aug", "noise_aug", None, {}),
    ("consistency (m=2)", "consistency", None, {}),
    ("macer (m=16, default)", "macer", None, {"start_epoch": 0}),
    ("macer (m=4, comparison)", "macer", 4, {"start_epoch": 0}),
    ("smoothadv (m=4, 10 steps, default)", "smoothadv", None, {}),
    ("smoothadv (m=2, 2 steps, comparison)", "smoothadv", 2, {"steps": 2}),
]
NOISES = [("gaussian", {}), ("gennormal", {"beta": 0.75})]


def time_steps(args: argparse.Namespace) -> None:
    """Median seconds per training step of each method, interleaved, and the ratio."""
    from unicr_pl.lightning.module import UniCRModule

    warnings.filterwarnings("ignore")  # self.log outside a Trainer warns; nothing is logged
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} (MNIST LeNet)")
    for noise, params in NOISES:
        runs = {}
        for label, method, m, margs in CASES:
            module = UniCRModule(
                "lenet", 10, [1, 28, 28], [0.1307], [0.3081], noise=noise, sigma=0.25,
                method=method, m=m, method_args=margs, **params,
            ).to(device)  # fmt: skip
            opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
            runs[label] = (module, opt, [])
            _steps(module, opt, x, y, 1, device)  # warm-up
        for _ in range(args.rounds):
            for module, opt, times in runs.values():
                times.append(_steps(module, opt, x, y, args.steps, device) / args.steps)
        base = statistics.median(runs["noise_aug"][2])
        print(f"\n{noise} {params or ''} sigma=0.25")
        print(f"{'method':38s} {'s/step':>8s} {'x noise_aug':>11s}")
        for label, (_, _, times) in runs.items():
            t = statistics.median(times)
            print(f"{label:38s} {t:8.3f} {t / base:11.1f}")


def _steps(module, opt, x, y, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = module._train_step((x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def table(args: argparse.Namespace) -> None:
    """One markdown table from <root>/<setting>/analyze-<kind>/certified_accuracy_l2.csv."""
    import pandas as pd

    lines = []
    for setting in sorted(p for p in Path(args.root).iterdir() if p.is_dir()):
        proven_csv = setting / "analyze-proven" / "certified_accuracy_l2.csv"
        family_csv = setting / "analyze-family" / "certified_accuracy_l2.csv"
        if not (proven_csv.is_file() and family_csv.is_file()):
            continue
        proven = pd.read_csv(proven_csv, index_col="file")
        family = pd.read_csv(family_csv, index_col="file")
        methods = [m for m in args.methods if m in proven.index]
        radii = [c for c in proven.columns if c != "R_score"]
        if not lines:
            head = ["noise", "method", *(f"r = {r}" for r in radii), "ACR"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in methods:
            cells = [
                f"{proven.loc[method, c]:.3f} / {family.loc[method, c]:.3f}"
                for c in [*radii, "R_score"]
            ]
            lines.append(f"| {setting.name} | {method} | " + " | ".join(cells) + " |")
    if not lines:
        raise SystemExit(f"no analyze results under {args.root}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (Path(args.root) / "table.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="seconds per training step, methods interleaved")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--steps", type=int, default=4, help="steps per method and round")
    t.add_argument("--rounds", type=int, default=3)
    t.set_defaults(run=time_steps)
    m = sub.add_parser("table", help="merge the comparison's analyze CSVs into table.md")
    m.add_argument("root", help="the comparison's output folder")
    m.add_argument(
        "--methods", nargs="+", default=["noise_aug", "consistency", "macer", "smoothadv"]
    )
    m.set_defaults(run=table)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
