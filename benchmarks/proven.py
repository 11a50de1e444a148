"""Proven radius vs structured-family radius for every built-in noise, norm, d and p_A.

    python benchmarks/proven.py                       # the docs/soundness.md table
    python benchmarks/proven.py --dims 784 --jobs 4   # a subset, in parallel

Prints a markdown table of radius / radius_family (1.000 = proven exact) and the bound used.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from unicr_pl.noises import create_noise
from unicr_pl.radius import certified_radii

# The built-in noise set, owned by the curve benchmark (run from the repository root).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from curves import NOISES  # noqa: E402

P_AS = (0.6, 0.8, 0.9, 0.99)
NORMS = (1, 2, "inf")


def label(name: str, params: dict) -> str:
    beta = params.get("beta")
    return name if beta is None else f"{name} b={beta:g}"


def one(job: tuple) -> list[tuple]:
    (name, params), dim = job
    noise = create_noise(name, **params)
    rows = []
    for p_a in P_AS:
        for res in certified_radii(noise, p_a, norms=NORMS, dim=dim):
            ratio = res.radius / res.radius_family if res.radius_family > 0 else math.nan
            rows.append((label(name, params), dim, res.norm, p_a, ratio, res.bound.split(" ")[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[784, 3072, 150528])
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = [(noise, dim) for dim in args.dims for noise in NOISES]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = [row for rows in pool.map(one, jobs) for row in rows]
    table: dict[tuple, dict] = {}
    for name, dim, norm, p_a, ratio, bound in results:
        entry = table.setdefault((name, dim, norm), {"bound": set()})
        entry[p_a] = ratio
        entry["bound"].add(bound)
    print("| noise | d | norm | " + " | ".join(f"p_A={p:g}" for p in P_AS) + " | bound |")
    print("|---|---|---|" + "---|" * len(P_AS) + "---|")
    for (name, dim, norm), entry in table.items():
        cells = " | ".join(f"{entry[p]:.3f}" for p in P_AS)
        norm_s = "inf" if math.isinf(norm) else f"{norm:g}"
        print(f"| {name} | {dim} | l{norm_s} | {cells} | {', '.join(sorted(entry['bound']))} |")
    print()
    for norm in (1.0, 2.0, math.inf):
        mine = [r for r in results if r[2] == norm and math.isfinite(r[4])]
        worst = min(mine, key=lambda r: r[4])
        norm_s = "inf" if math.isinf(norm) else f"{norm:g}"
        print(f"worst l{norm_s} ratio: {worst[4]:.3f} ({worst[0]}, d={worst[1]}, p_A={worst[3]})")
    print(f"{len(results)} radii in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
