"""Why `method="pso"` lands below Cohen's closed form for Gaussian l2: one factor at a time.

    python benchmarks/pso_study.py [--quick] [--dim 784]

Gaussian noise is isotropic, so in l2 every direction has Cohen's radius and any shortfall is
error. Each row changes one setting of the paper's procedure (Monte Carlo draws n, bisection
tolerance, particles, iterations) and prints the mean and standard deviation of the relative
error against Cohen over p_A x seeds; "fresh" re-measures the swarm's winning direction on
independent draws. Results and reading: docs/radius-engine.md ("Why pso lands ...").
Full: about 8 CPU minutes at d = 784; --quick: about 2.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unicr_pl.noises import create_noise
from unicr_pl.radius import PSOConfig
from unicr_pl.radius import closed_forms as cf
from unicr_pl.radius.monte_carlo import draw_noise
from unicr_pl.radius.pso import direction_radii, pso_radius

NOISE = create_noise("gaussian", sigma=1.0)


def study(cfg: PSOConfig, dim: int, p_as, seeds, fresh: bool = False) -> dict:
    """Relative errors of pso_radius against Cohen (and of its winner on fresh draws)."""
    start, rel, again = time.process_time(), [], []
    for p_a in p_as:
        ref = cf.cohen_l2(1.0, p_a)
        for seed in seeds:
            out = pso_radius(NOISE, p_a, 1 - p_a, 2.0, dim, cfg, seed=seed)
            rel.append(out["radius"] / ref - 1)
            if fresh:  # the same direction on draws the swarm never saw
                eps = draw_noise(NOISE, cfg.n, dim, 10_000 + seed, "cpu")
                v = out["direction"].to(torch.float64)[None]
                r = direction_radii(NOISE, eps, v, p_a, 1 - p_a, cfg.rtol)
                again.append(float(r[0]) / ref - 1)
    return {
        "mean": statistics.mean(rel),
        "sd": statistics.stdev(rel) if len(rel) > 1 else 0.0,
        "fresh": statistics.mean(again) if again else None,
        "cpu_s": (time.process_time() - start) / len(rel),
    }


def rows() -> list[tuple[str, PSOConfig, bool, bool]]:
    """(label, settings, re-measure the winner, full mode only)."""
    one = {"particles": 1, "iterations": 0}
    return [
        ("default: n=2000, 8 particles x 5 iterations", PSOConfig(), True, False),
        ("one direction (axis), no swarm", PSOConfig(**one), False, False),
        ("  same, n=20000", PSOConfig(n=20_000, **one), False, True),
        ("  same, bisection rtol 1e-6", PSOConfig(rtol=1e-6, **one), False, False),
        ("  same, bisection rtol 1e-2", PSOConfig(rtol=1e-2, **one), False, False),
        ("8 axes, no iterations", PSOConfig(particles=8, iterations=0), False, False),
        ("official 4 particles x 3 iterations", PSOConfig(particles=4, iterations=3), False, True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="p_A 0.75, 0.9 x 3 seeds")
    parser.add_argument("--dim", type=int, default=784)
    args = parser.parse_args()
    p_as = (0.75, 0.9) if args.quick else (0.6, 0.75, 0.9, 0.99)
    seeds = range(3 if args.quick else 5)
    print(f"Gaussian sigma=1, l2, d={args.dim}, p_A in {p_as}, seeds {list(seeds)}")
    print(f"{'settings':46s} {'mean':>8s} {'sd':>7s} {'fresh':>8s} {'cpu s':>7s}")
    for label, cfg, fresh, full_only in rows():
        if full_only and args.quick:
            continue
        r = study(cfg, args.dim, p_as, seeds, fresh)
        again = f"{r['fresh']:+8.2%}" if r["fresh"] is not None else f"{'':8s}"
        print(f"{label:46s} {r['mean']:+8.2%} {r['sd']:7.2%} {again} {r['cpu_s']:7.2f}", flush=True)
    if not args.quick:  # 4x the draws: the swarm's shortfall shrinks with the Monte Carlo noise
        for n in (2000, 8000):
            r = study(PSOConfig(n=n), args.dim, (0.75, 0.9), range(3), True)
            print(
                f"{f'default swarm, n={n} (p_A 0.75, 0.9 x 3 seeds)':46s} {r['mean']:+8.2%} "
                f"{r['sd']:7.2%} {r['fresh']:+8.2%} {r['cpu_s']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
