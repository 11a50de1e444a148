"""Root-search benchmark: the engine's `inside_root` against warm-started scipy root finders,
on the engine's own root problems (issue #16: keep the hand-rolled search only if it is faster).

    python benchmarks/root_search.py [--quick]

Every root problem a radius solves (one per k and sign: f(a) = K at a (1, ..., 1, 0, ...), with
the engine's start x0, f0 = f(x0), expected slope and rtol) is recorded, then replayed by
  * `inside_root`, exactly as the engine calls it;
  * `toms748` and `brentq` (scipy), warm-started from the same x0, f0 and slope: steps of
    geometrically growing size from x0 (the first one the Newton distance |f0 / slope|, plus 10%
    and the tolerance) until f changes sign, then the scipy method on log a with xtol = the same
    tolerance; the answer is the inside end (f > 0) of the tightest bracket among the evaluated
    points, bisected further if scipy stopped with it wider than the tolerance (the engine needs
    the inside end: that is what makes the radius a lower bound; scipy's root need not be inside).
Evaluations are counted once per distinct point (scipy re-evaluating a bracket end is free), and
each takes a lattice law (~1 ms), so evaluations decide the time. Prints, for each noise, d and
p_A (p_B = 1 - p_A), the evaluations and milliseconds of each method at a few k and summed over
every root problem of that radius ("all").

Measured (2 shared cores, 30 radii): inside_root 3179 evaluations / 17.9 s, brentq 3506 / 19.3 s,
toms748 4143 / 23.7 s; inside_root took fewer evaluations than brentq for 25 of the 30 radii
(more for 4: uniform at p_A = 0.9, beta = 0.5 at d = 150528 and p_A >= 0.9). scipy's first
step past the Newton step (--overshoot 0, 0.1, 0.5; with --quick) changes its totals by < 10%,
never below inside_root's.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

import unicr_pl.radius.exact as exact
from unicr_pl.noises import Noise, create_noise


@dataclass
class Problem:
    """One root search as the engine posed it."""

    k: int
    sign: float
    f: Callable[[float], float]
    x0: float
    f0: float
    slope: float
    rtol: float
    limits: tuple[float, float]


def record_problems(noise: Noise, p_a: float, dim: int) -> tuple[exact.ExactEngine, list[Problem]]:
    """Runs one radius (norms 1, 2, inf) and returns every root problem it solved."""
    engine = exact.ExactEngine(noise)
    problems: list[Problem] = []
    current: dict[str, float] = {}
    original_search, original_scale = exact.inside_root, exact.ExactEngine._boundary_scale

    def search(f, x0, f0, slope, rtol, limits):
        problems.append(Problem(int(current["k"]), current["sign"], f, x0, f0, slope, rtol, limits))
        return original_search(f, x0, f0, slope, rtol, limits)

    def scale(self, k, p_a, p_b, sign, guess, slope):
        current.update(k=k, sign=sign)
        return original_scale(self, k, p_a, p_b, sign, guess, slope)

    exact.inside_root, exact.ExactEngine._boundary_scale = search, scale
    try:
        engine.radius(p_a, 1 - p_a, [1.0, 2.0, math.inf], dim)
    finally:
        exact.inside_root, exact.ExactEngine._boundary_scale = original_search, original_scale
    return engine, problems


class Counted:
    """f on u = log x, evaluated once per distinct u; remembers every point."""

    def __init__(self, f: Callable[[float], float]) -> None:
        self.f, self.seen = f, {}

    def __call__(self, u: float) -> float:
        u = float(u)
        if u not in self.seen:
            self.seen[u] = self.f(math.exp(u))
        return self.seen[u]

    def bracket(self) -> tuple[float | None, float | None]:
        """(largest u with f > 0, smallest u with f <= 0) among the evaluated points."""
        inside = [u for u, v in self.seen.items() if v > 0]
        outside = [u for u, v in self.seen.items() if v <= 0]
        return (max(inside) if inside else None), (min(outside) if outside else None)


def scipy_inside_root(
    method: str,
    f: Callable[[float], float],
    x0: float,
    f0: float,
    slope: float,
    rtol: float,
    limits: tuple[float, float],
    overshoot: float = 0.1,
) -> tuple[float, int]:
    """The inside end of a bracket no wider than rtol found by a warm-started scipy method
    (`inside_root`'s contract), and the number of evaluations of f it took."""
    g = Counted(f)
    tol = -math.log1p(-rtol)  # hi - lo <= rtol * hi  <=>  log(hi / lo) <= tol
    u_min, u_max = math.log(limits[0]), math.log(limits[1])
    u0 = math.log(x0)
    g.seen[u0] = f0  # given, as to inside_root
    # Bracket: geometric steps away from x0, the first the Newton distance and a little more.
    step = (abs(f0 / slope) if slope < 0 else 1.0) * (1 + overshoot) + tol
    u, fu = u0, f0
    while True:
        if u >= u_max and fu > 0:
            return math.inf, len(g.seen) - 1
        if u <= u_min and fu <= 0:
            return 0.0, len(g.seen) - 1
        nxt = min(max(u + step if fu > 0 else u - step, u_min), u_max)
        if (g(nxt) > 0) != (fu > 0):
            break
        u, fu, step = nxt, g(nxt), 2 * step
    lo, hi = g.bracket()
    assert lo is not None and hi is not None
    if hi - lo > tol:
        root = getattr(optimize, method)
        root(g, lo, hi, xtol=tol, rtol=4 * np.finfo(float).eps)
        lo, hi = g.bracket()
    while hi - lo > tol:  # scipy stopped a hair wider than tol: bisect to it
        mid = 0.5 * (lo + hi)
        g(mid)
        lo, hi = g.bracket()
    return math.exp(lo), len(g.seen) - 1


def replay(problem: Problem, method: str, overshoot: float) -> tuple[float, int, float]:
    """(inside end, evaluations, seconds) of one method on one recorded problem."""
    calls = [0]

    def f(x: float) -> float:
        calls[0] += 1
        return problem.f(x)

    args = (problem.x0, problem.f0, problem.slope, problem.rtol, problem.limits)
    start = time.perf_counter()
    if method == "inside_root":
        x, _ = exact.inside_root(f, *args)
        evals = calls[0]
    else:
        x, evals = scipy_inside_root(method, f, *args, overshoot=overshoot)
    return x, evals, time.perf_counter() - start


METHODS = ("inside_root", "toms748", "brentq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="d = 3072 only, two p_A")
    parser.add_argument(
        "--overshoot", type=float, default=0.1, help="scipy's first step past the Newton step"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    def gumbel(y: torch.Tensor) -> torch.Tensor:
        return -(y + torch.exp(-y))

    noises = {
        "gaussian": create_noise("gaussian", sigma=1.0),
        "laplace": create_noise("laplace", sigma=1.0),
        "gennormal 0.5": create_noise("gennormal", beta=0.5, sigma=1.0),
        "uniform": create_noise("uniform", sigma=1.0),
        "gumbel (custom)": create_noise("custom", log_density=gumbel, alpha=1.0),
    }
    dims = (3072,) if args.quick else (3072, 150528)
    p_as = (0.6, 0.99) if args.quick else (0.6, 0.9, 0.999)
    head = f"{'noise':16s} {'d':>6s} {'p_A':>5s} {'k':>6s}"
    print(head + "".join(f" | {m:>11s} ev    ms" for m in METHODS))
    totals = {m: [0, 0.0] for m in METHODS}
    for name, noise in noises.items():
        for dim in dims:
            for p_a in p_as:
                engine, problems = record_problems(noise, p_a, dim)
                rows: dict[str, dict[str, list]] = {}
                for prob in problems:
                    out = {m: replay(prob, m, args.overshoot) for m in METHODS}
                    # Every method must return an inside end within tolerance of the others.
                    xs = [out[m][0] for m in METHODS]
                    if all(math.isfinite(x) and x > 0 for x in xs):
                        assert max(xs) / min(xs) - 1 <= 2.01 * prob.rtol, (name, prob.k, xs)
                    shown = prob.k in (1, 4, 64, dim) and prob.sign > 0
                    for key in (str(prob.k),) * shown + ("all",):
                        row = rows.setdefault(key, {m: [0, 0.0] for m in METHODS})
                        for m in METHODS:
                            row[m][0] += out[m][1]
                            row[m][1] += out[m][2]
                for key, row in sorted(
                    rows.items(), key=lambda r: (r[0] == "all", len(r[0]), r[0])
                ):
                    line = f"{name:16s} {dim:6d} {p_a:5.3g} {key:>6s}"
                    print(
                        line
                        + "".join(f" | {row[m][0]:14d} {1e3 * row[m][1]:5.0f}" for m in METHODS)
                    )
                    if key == "all":
                        for m in METHODS:
                            totals[m][0] += row[m][0]
                            totals[m][1] += row[m][1]
    print(
        f"{'total':16s} {'':6s} {'':5s} {'':>6s}"
        + "".join(f" | {totals[m][0]:14d} {1e3 * totals[m][1]:5.0f}" for m in METHODS)
    )


if __name__ == "__main__":
    main()
