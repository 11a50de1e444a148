"""Radius benchmark: the default engine, the paper's PSO, curves and look-ups, and a plain
re-implementation of the official scripts' procedure, side by side in one run.

    python benchmarks/radius.py [--quick]

Prints wall-clock seconds on this machine and the relative error against Cohen's closed form
(Gaussian noise, sigma = 1, p_A = 0.9).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from unicr_pl.noises import create_noise
from unicr_pl.radius import PSOConfig, RadiusCurve, certified_radius
from unicr_pl.radius import closed_forms as cf
from unicr_pl.radius.monte_carlo import draw_noise, log_ratio


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def official_procedure(noise, p_a, p, dim, seed, n=1000, particles=4, iterations=3):
    """The official scripts' recipe, re-implemented plainly: N = 1000 draws, t_A from the
    empirical quantile of L under X, P_Y estimated on separate draws of Y, bisection stopped at
    |K| <= 0.01 returning the last midpoint, 4 particles x 3 iterations from one-hot / all-ones.
    """
    gen = torch.Generator().manual_seed(seed)
    eps_x = draw_noise(noise, n, dim, seed, "cpu")
    eps_y = draw_noise(noise, n, dim, seed + 10_000, "cpu")

    def gap(delta):  # K = P_Y(L <= t_A) - 1/2, binary case
        lx = log_ratio(noise, eps_x, delta)
        t_a = torch.quantile(lx, p_a, dim=1, keepdim=True)
        ly = -log_ratio(noise, eps_y, -delta)  # L at y = eps + delta
        return (ly <= t_a).double().mean(1) - 0.5

    def scale(v):
        lo, hi = 0.0, 1.0
        while gap(hi * v[None])[0] > 0:
            lo, hi = hi, 2 * hi
        lam = 0.5 * (lo + hi)
        for _ in range(50):
            k = float(gap(lam * v[None])[0])
            if abs(k) <= 0.01:
                break
            lo, hi = (lam, hi) if k > 0 else (lo, lam)
            lam = 0.5 * (lo + hi)
        return lam * float(torch.linalg.vector_norm(v, ord=p))

    if math.isinf(p):
        pos = torch.ones(particles, dim, dtype=torch.float64)
    else:
        pos = torch.zeros(particles, dim, dtype=torch.float64)
        pos[torch.arange(particles), torch.arange(particles) % dim] = 1.0
    pos = pos + 1e-3 * torch.rand(pos.shape, dtype=torch.float64, generator=gen)
    vel = torch.zeros_like(pos)
    cost = torch.tensor([scale(v) for v in pos])
    best, best_cost = pos.clone(), cost.clone()
    for _ in range(iterations):
        g = best[int(torch.argmin(best_cost))]
        r1, r2 = torch.rand(pos.shape, generator=gen), torch.rand(pos.shape, generator=gen)
        vel = 0.7 * vel + 1.5 * r1 * (best - pos) + 1.5 * r2 * (g - pos)
        pos = pos + vel
        cost = torch.tensor([scale(v) for v in pos])
        better = cost < best_cost
        best[better], best_cost[better] = pos[better], cost[better]
    return float(best_cost.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip d = 150528 for PSO/official")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    noise = create_noise("gaussian", sigma=1.0)
    p_a = 0.9
    print(f"threads={torch.get_num_threads()}  noise={noise!r}  p_A={p_a}")
    print(f"{'what':44s} {'d':>7s} {'seconds':>9s} {'radius':>10s} {'rel.err':>9s}")

    def row(what, dim, seconds, radius, ref):
        print(f"{what:44s} {dim:7d} {seconds:9.3f} {radius:10.5f} {radius / ref - 1:+9.2e}")

    ref = cf.cohen_l2(1.0, p_a)
    for dim in (784, 3072, 150528):
        certified_radius(noise, 0.7, norm=2, dim=dim)  # warm the engine's tables
        r, s = timed(lambda d=dim: certified_radius(noise, p_a, norm=2, dim=d))
        row("exact, one l2 radius (all k searched)", dim, s, r, ref)
    others = [("laplace", {}), ("gennormal", {"beta": 0.75}), ("gennormal", {"beta": 3.0})]
    for name, params in others:  # no closed form for l2: radius only
        other = create_noise(name, sigma=1.0, **params)
        certified_radius(other, 0.7, norm=2, dim=3072)
        r, s = timed(lambda n=other: certified_radius(n, p_a, norm=2, dim=3072))
        print(f"{'  same, ' + other.describe():44s} {3072:7d} {s:9.3f} {r:10.5f}")
    for dim in (784, 3072) if args.quick else (784, 3072, 150528):
        cfg = PSOConfig() if dim < 100_000 else PSOConfig(n=1000, particles=2, iterations=1)
        r, s = timed(
            lambda d=dim, c=cfg: certified_radius(
                noise, p_a, norm=2, dim=d, method="pso", pso=c, seed=0
            )
        )
        row(f"pso (n={cfg.n}, {cfg.particles}x{cfg.iterations})", dim, s, r, ref)

    for dim in (3072, 150528):
        curve, s = timed(lambda d=dim: RadiusCurve(noise, d, cache_dir=None))
        print(f"{'200-point curve, norms 1 2 inf':44s} {dim:7d} {s:9.3f}")
    lookups = np.random.default_rng(0).uniform(0.5, 1.0, 10_000)
    curve.radius(lookups[:10], norm=2)
    _, s = timed(lambda: curve.radius(lookups, norm=2))
    print(f"{'10,000 look-ups on a cached curve':44s} {150528:7d} {s:9.5f}")
    r = curve.radius([p_a], norm=2)[0]
    print(
        f"{'  look-up at p_A = 0.9 (grid value below)':44s} {150528:7d} {'':9s} {r:10.5f}"
        f" {r / ref - 1:+9.2e}"
    )

    for dim in (784,) if args.quick else (784, 3072):
        radii, seconds = [], []
        for seed in range(10):
            r, s = timed(lambda d=dim, sd=seed: official_procedure(noise, p_a, 2, d, sd))
            radii.append(r)
            seconds.append(s)
        mean, sd = statistics.mean(radii), statistics.stdev(radii)
        over = sum(r > ref for r in radii)
        print(
            f"{'official procedure, 10 seeds: mean':44s} {dim:7d} {statistics.mean(seconds):9.3f}"
            f" {mean:10.5f} {mean / ref - 1:+9.2e}"
        )
        print(
            f"{'  spread (std) / min / max / # over Cohen':44s} {'':7s} {'':9s} {sd:10.5f}"
            f"  min {min(radii):.4f} max {max(radii):.4f}  over: {over}/10"
        )


if __name__ == "__main__":
    main()
