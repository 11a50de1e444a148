"""`certify.py analyze`: certified-accuracy table, curves and robustness score of result TSVs.

Rows are files (e.g. one per sigma), columns the radii, the last column each file's area under
its curve; a final row takes the max over files at each radius and its area, Eq. (5)'s R_score.
A second table gives the paper's Table 3 view: the mean of the top 20%, ..., 100% radii.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from unicr_pl.commands.curve import _writable_dir
from unicr_pl.metrics import (
    average_certified_radius,
    certified_accuracy_curve,
    robustness_score,
    top_radius_means,
)
from unicr_pl.radius.checks import check_norm, norm_label
from unicr_pl.results import (
    atomic_path,
    describe_manifest,
    radius_and_correct,
    read_manifest,
    read_results,
)

DEFAULT_RADII = {
    "l1": np.arange(0, 2.51, 0.25),
    "l2": np.arange(0, 2.51, 0.25),
    "linf": np.arange(0, 10.1, 1) / 255,
}


FORMATS = {"text": None, "md": ".md", "latex": ".tex", "csv": ".csv"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="certified-accuracy table and R_score of result TSVs")
    p.add_argument("files", nargs="+", help="result TSVs (ours or Cohen et al.'s)")
    p.add_argument("--norm", default="2", help="l_p order whose radius column is read")
    p.add_argument("--radii", type=float, nargs="+", help="radius grid of the table")
    p.add_argument(
        "--radius",
        choices=["proven", "family"],
        default="proven",
        help="proven: the certificate (radius_l<p>); family: radius_family_l<p>, the value "
        "over the structured family of perturbations (an upper bound)",
    )
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        default="text",
        help="how the tables are printed (md, latex, csv also write them to --out)",
    )
    p.add_argument("--out", default="outputs/analyze", help="where the CSV and PNG go")
    p.set_defaults(run=run)


def _read(files: list[str], p: float, family: bool) -> tuple[list, list[str], list[dict]]:
    """(radius, correct) per file, names, manifests; every file is read before any output."""
    sets, names, manifests = [], [], []
    for f in files:
        rows = read_results(f)
        try:
            r, c = radius_and_correct(rows, p, family=family)
        except ValueError as err:
            raise ValueError(f"{err} ({f}, --radius family)") from None
        sets.append((np.array(r), np.array(c, dtype=bool)))
        names.append(Path(f).stem)
        try:
            manifests.append({"rows": rows, "manifest": read_manifest(f)})
        except ValueError:
            manifests.append({"rows": rows, "manifest": None})
    return sets, names, manifests


def _show(frame, fmt: str, out: Path, stem: str, float_format: str) -> list[Path]:
    """Prints a table in `fmt` and, for md / latex / csv, writes it under `out`."""
    if fmt == "text":
        print(frame.to_string(float_format=lambda v: format(v, float_format)))
        return []
    if fmt == "md":
        text = frame.to_markdown(floatfmt=float_format)
    elif fmt == "latex":
        text = frame.to_latex(float_format=lambda v: format(v, float_format), escape=True)
    else:
        text = frame.to_csv(float_format=f"%{float_format}")
    print(text)
    path = out / f"{stem}{FORMATS[fmt]}"
    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")
    return [path]


def run(args: argparse.Namespace) -> None:
    import pandas as pd

    p = check_norm(args.norm)
    label = norm_label(p)
    radii = np.asarray(args.radii if args.radii else DEFAULT_RADII.get(label, DEFAULT_RADII["l2"]))
    if radii.ndim != 1 or np.any(radii < 0) or not np.all(np.isfinite(radii)):
        raise ValueError("--radii must be non-negative numbers")
    sets, names, manifests = _read(args.files, p, args.radius == "family")
    out = _writable_dir(args.out)  # after every check and read: no folder for bad input
    table = [certified_accuracy_curve(r, c, radii) for r, c in sets]
    scores = [average_certified_radius(r, c) for r, c in sets]
    rows = [[*acc, s] for acc, s in zip(table, scores, strict=True)]
    rows.append([*np.max(table, axis=0), robustness_score(sets)])
    kind = "" if args.radius == "proven" else ", family"
    frame = pd.DataFrame(
        rows,
        index=pd.Index([*names, "max over files (Eq. 5)"], name=f"certified accuracy ({label})"),
        columns=[*(f"{x:g}" for x in radii), "R_score"],
    )
    frame.index.name = f"certified accuracy ({label}{kind})"
    csv_path = out / f"certified_accuracy_{label}.csv"
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index_label="file")
    written = [csv_path, *_show(frame, args.format, out, f"certified_accuracy_{label}", ".4f")]
    with atomic_path(out / f"certified_accuracy_{label}.png") as tmp:
        _plot(sets, names, label, tmp)
    written.append(out / f"certified_accuracy_{label}.png")

    fractions = (0.2, 0.4, 0.6, 0.8, 1.0)
    top = pd.DataFrame(
        [top_radius_means(r, c, fractions) for r, c in sets],
        index=pd.Index(names, name=f"mean of top radii ({label}{kind})"),
        columns=[f"top{q:.0%}" for q in fractions],
    )
    print()
    top_path = out / f"top_radius_means_{label}.csv"
    with atomic_path(top_path) as tmp:
        top.to_csv(tmp, index_label="file")
    written += [top_path, *_show(top, args.format, out, f"top_radius_means_{label}", ".4f")]
    print("\nwhat these numbers come from:")
    for name, m in zip(names, manifests, strict=True):
        print(f"{name}:")
        if m["manifest"] is None:
            print(f"  no manifest ({len(m['rows'])} rows; e.g. a file of Cohen et al.'s code)")
        else:
            print("\n".join(describe_manifest(m["manifest"], m["rows"])))
    print("wrote " + ", ".join(map(str, written)))


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
