"""`certify.py curve`: p_A -> R curves (CSV + PNG) beside every closed form that applies.

With --p, also the radius against the l_p order at one p_A (the paper's Fig. 12).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from unicr_pl.commands.noise_args import add_noise_arguments, noise_from_args
from unicr_pl.radius import RadiusCurve, certified_radii
from unicr_pl.radius.checks import check_norm, norm_label
from unicr_pl.radius.closed_forms import references
from unicr_pl.radius.curve import default_p_grid


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="p_A -> R curves as CSV and PNG")
    add_noise_arguments(p)
    p.add_argument("--norm", nargs="+", default=["1", "2", "inf"], help="l_p orders")
    p.add_argument("--dim", type=int, required=True, help="input dimension d")
    p.add_argument("--points", type=int, default=200, help="p_A grid points (up to 1 - 1e-6)")
    p.add_argument("--out", default="outputs/curves", help="output directory")
    p.add_argument("--p", nargs="+", help="also plot radius against these l_p orders")
    p.add_argument("--pa-at", type=float, default=0.9, help="p_A for the --p plot (Fig. 12)")
    p.add_argument("--no-cache", action="store_true", help="recompute instead of reading cache")
    p.set_defaults(run=run)


def _writable_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {path!r} is not a writable directory: {err}") from err
    return out


def run(args: argparse.Namespace) -> None:
    noise = noise_from_args(args)
    norms = [check_norm(p) for p in args.norm]
    if args.points < 2:
        raise ValueError(f"--points must be >= 2, got {args.points}")
    if args.dim < 1:
        raise ValueError(f"--dim must be >= 1, got {args.dim}")
    # Checked here, not when the --p plot is made after the (long) curve computation.
    if args.p:
        for p in args.p:
            try:
                check_norm(p)
            except ValueError as err:
                raise ValueError(f"{err} (--p)") from None
        if not 0.5 < args.pa_at < 1:
            raise ValueError(f"--pa-at must be in (0.5, 1) (p_A > 1/2), got {args.pa_at}")
    out = _writable_dir(args.out)  # fail before the (long) computation, not after
    stem = f"{noise.name}_d{args.dim}"
    start = time.perf_counter()
    print(f"computing p_A -> R curves for {noise!r}, d={args.dim} ...", flush=True)
    curve = RadiusCurve(
        noise, args.dim, norms, default_p_grid(args.points), cache_dir=not args.no_cache and True
    )
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    refs = references(noise, args.dim)
    columns = {"p_a": curve.p_grid}
    # R_<norm>: the proven radius; R_family_<norm>: the structured-family value (an upper bound
    # of the true radius, comparable to the UniCR paper); docs/soundness.md.
    columns.update({f"R_{norm_label(p)}": curve.proven[p] for p in norms})
    columns.update({f"R_family_{norm_label(p)}": curve.radii[p] for p in norms})
    for label, p, fn in refs:
        if p in norms:
            columns[label] = np.array([fn(float(x)) for x in curve.p_grid])
    csv_path = out / f"{stem}_curve.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    png_path = out / f"{stem}_curve.png"
    _plot_curves(columns, norms, refs, noise, args.dim, png_path)
    print(f"wrote {csv_path} and {png_path}")
    if args.p:
        _radius_vs_p(noise, args, out, stem)


def _plot_curves(columns, norms, refs, noise, dim, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 3.6), squeeze=False)
    for ax, p in zip(axes[0], norms, strict=True):
        ax.plot(columns["p_a"], columns[f"R_{norm_label(p)}"], label="proven", lw=2)
        family = columns[f"R_family_{norm_label(p)}"]
        ax.plot(columns["p_a"], family, ":", label="family (UniCR)", lw=2)
        for label, q, _ in refs:
            if q == p:
                ax.plot(columns["p_a"], columns[label], "--", label=label)
        ax.set(title=f"{noise.describe()} vs {norm_label(p)}, d={dim}", xlabel="p_A", ylabel="R")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _radius_vs_p(noise, args, out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = [check_norm(p) for p in args.p]
    results = certified_radii(noise, args.pa_at, None, norms=ps, dim=args.dim)
    path = out / f"{stem}_radius_vs_p.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["p", "radius", "radius_family", "bound"])
        writer.writerows(
            [[norm_label(r.norm), r.radius, r.radius_family, r.bound] for r in results]
        )
    finite = [r for r in results if math.isfinite(r.norm)]
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.plot([r.norm for r in finite], [r.radius for r in finite], "o-", label="proven")
    ax.plot([r.norm for r in finite], [r.radius_family for r in finite], "s:", label="family")
    ax.legend(fontsize=8)
    ax.set(xlabel="p", ylabel="R", title=f"{noise.describe()}, p_A={args.pa_at}, d={args.dim}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)
    print(f"wrote {path} and {path.with_suffix('.png')}")
