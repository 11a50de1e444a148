"""`certify.py analyze`: certified-accuracy table, curves and robustness score of result TSVs.

Rows are files (e.g. one per sigma), columns the radii, the last column each file's area under
its curve; a final row takes the max over files at each radius and its area, Eq. (5)'s R_score.
A second table gives the paper's Table 3 view: the mean of the top 20%, ..., 100% radii.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from unicr_pl.commands.curve import _writable_dir
from unicr_pl.metrics import (
    average_certified_radius,
    certified_accuracy_curve,
    robustness_score,
    top_radius_means,
)
from unicr_pl.radius.checks import check_norm
from unicr_pl.results import radius_and_correct, read_results

DEFAULT_RADII = {
    "l1": np.arange(0, 2.51, 0.25),
    "l2": np.arange(0, 2.51, 0.25),
    "linf": np.arange(0, 10.1, 1) / 255,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="certified-accuracy table and R_score of result TSVs")
    p.add_argument("files", nargs="+", help="result TSVs (ours or Cohen et al.'s)")
    p.add_argument("--norm", default="2", help="l_p order whose radius column is read")
    p.add_argument("--radii", type=float, nargs="+", help="radius grid of the table")
    p.add_argument("--out", default="outputs/analyze", help="where the CSV and PNG go")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    p = check_norm(args.norm)
    label = "linf" if math.isinf(p) else f"l{p:g}"
    radii = np.asarray(args.radii if args.radii else DEFAULT_RADII.get(label, DEFAULT_RADII["l2"]))
    if radii.ndim != 1 or np.any(radii < 0):
        raise ValueError("--radii must be non-negative numbers")
    out = _writable_dir(args.out)
    sets, names = [], []
    for f in args.files:
        r, c = radius_and_correct(read_results(f), p)
        sets.append((np.array(r), np.array(c, dtype=bool)))
        names.append(Path(f).stem)
    table = [certified_accuracy_curve(r, c, radii) for r, c in sets]
    scores = [average_certified_radius(r, c) for r, c in sets]
    rows = [[n, *acc, s] for n, acc, s in zip(names, table, scores, strict=True)]
    rows.append(["max over files (Eq. 5)", *np.max(table, axis=0), robustness_score(sets)])

    width = max(len(r[0]) for r in rows)
    header = (
        f"{'certified accuracy (' + label + ')':{width}s} "
        + " ".join(f"{x:>7.3g}" for x in radii)
        + "  R_score"
    )
    print(header)
    for name, *vals in rows:
        print(f"{name:{width}s} " + " ".join(f"{v:7.3f}" for v in vals[:-1]) + f"  {vals[-1]:.4f}")

    csv_path = out / f"certified_accuracy_{label}.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", *[f"{x:g}" for x in radii], "R_score"])
        writer.writerows(rows)
    _plot(sets, names, label, out / f"certified_accuracy_{label}.png")
    print(f"wrote {csv_path} and {csv_path.with_suffix('.png')}")

    fractions = (0.2, 0.4, 0.6, 0.8, 1.0)
    top_rows = [
        [n, *top_radius_means(r, c, fractions)] for n, (r, c) in zip(names, sets, strict=True)
    ]
    print(
        f"\n{'mean of top radii (' + label + ')':{width}s} "
        + " ".join(f"{q:>7.0%}" for q in fractions)
    )
    for name, *vals in top_rows:
        print(f"{name:{width}s} " + " ".join(f"{v:7.3f}" for v in vals))
    top_path = out / f"top_radius_means_{label}.csv"
    with open(top_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", *[f"top{q:.0%}" for q in fractions]])
        writer.writerows(top_rows)
    print(f"wrote {top_path}")


def _plot(sets, names, label, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max([float(np.max(r[c])) if c.any() else 0.0 for r, c in sets] + [1e-12])
    grid = np.linspace(0, top * 1.05, 400)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    curves = []
    for (r, c), name in zip(sets, names, strict=True):
        curves.append(certified_accuracy_curve(r, c, grid))
        ax.plot(grid, curves[-1], label=name)
    if len(sets) > 1:
        ax.plot(grid, np.max(curves, axis=0), "k--", lw=1, label="max (R_score area)")
    ax.set(xlabel=f"radius ({label})", ylabel="certified accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
