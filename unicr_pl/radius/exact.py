"""The default radius engine: structured worst-case search over k with high-precision laws.

For each k in a grid over 1..d, the boundary scale a*(k) is the largest a with
K(a (1, ..., 1, 0, ..., 0)) > 0 (k ones), found by a bracketed root search on a whose
*inside* end is returned. The l_p radius is min_k a*(k) k^(1/p), for every p at once.
Where the noise is not symmetric, both signs of a are searched.

Why this family: it contains the axis (k = 1) and the diagonal (k = d), the known worst cases
for l1, l2 and l_inf under iid symmetric noise, and everything in between (Laplace noise
against l2 is worst at large k, where the law of L is nearly normal). a*(k) is non-increasing
in k (more perturbed coordinates can only make X and Y easier to tell apart), so for p = inf
the diagonal k = d is provably the minimiser within the family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from unicr_pl.noises import Noise
from unicr_pl.radius.checks import lp_norm_of_structured
from unicr_pl.radius.lattice import StructuredLogRatio
from unicr_pl.radius.neyman_pearson import boundary_gap


@dataclass
class ExactConfig:
    """Settings of the structured search."""

    rtol: float = 1e-5  # relative tolerance of the root in a
    k_ratio: float = 2.0  # coarse geometric grid over k
    refine_ratio: float = 1.1  # finer grid around each norm's minimiser
    dense_k: int = 4  # every k up to this is searched
    # Relative safety margin taken off every a*(k): covers the engine's numerical error, which
    # the tests measure against closed forms at ~2e-5 at worst and against an atom-exact
    # Laplace oracle at 5e-5; a 32x finer lattice moves it by < 3e-5 (README, "Soundness").
    margin: float = 1e-4


def k_grid(dim: int, ratio: float, dense: int) -> list[int]:
    """1..dense, then a geometric grid of the given ratio, always ending at d."""
    ks = set(range(1, min(dense, dim) + 1))
    k = float(dense)
    while k < dim:
        ks.add(int(round(k)))
        k *= ratio
    ks.add(dim)
    return sorted(x for x in ks if 1 <= x <= dim)


def refine_grid(left: int, right: int, ratio: float) -> list[int]:
    """Every k in [left, right] on a geometric grid of the given ratio (consecutive where the
    ratio is finer than 1), both ends included."""
    ks, k = {left, right}, float(left)
    while k < right:
        ks.add(int(round(k)))
        k = max(k * ratio, k + 1)
    return sorted(x for x in ks if x <= right)


def inside_root(
    f: Callable[[float], float],
    x0: float,
    f0: float,
    slope: float,
    rtol: float,
    limits: tuple[float, float],
) -> tuple[float, float | None]:
    """Root of a decreasing f (f > 0 inside) from a start x0 with f0 = f(x0); returns the
    *inside* end of a bracket no wider than rtol (relative), and df/dlog x measured there.

    Works in u = log x. Each new point is the predicted root (a Newton step with `slope`, the
    expected df/du, or the secant through two points on the same side, or regula falsi inside
    a bracket), pushed 0.3 tolerance past it towards the end not yet held within tolerance, so
    that an accurate prediction closes the bracket at the next evaluation: 2-4 evaluations
    from a good start. Where regula falsi creeps up from one side it overshoots by its last
    move; it bisects where the bracket stalls, and grows its step where f is flat. Returns 0
    (or inf) if f stays <= 0 (> 0) down to limits[0] (up to limits[1]); raises RuntimeError
    where f is NaN, or after 200 evaluations without a bracket within rtol.
    """
    # Hand-rolled, not scipy, because it is faster here: every f is a lattice law (~1-5 ms)
    # and the engine's starts are good, which this search exploits (it lands just past the
    # predicted root, so one more point closes the bracket). On the engine's own root problems
    # (benchmarks/root_search.py: 5 noises, d = 3072 and 150528, p_A = 0.6, 0.9, 0.999; 30
    # radii) it took 3179 evaluations (17.9 s), scipy's brentq 3506 (19.3 s) and toms748 4143
    # (23.7 s), both warm-started from the same point and slope and returning the inside end;
    # Gaussian at d = 3072: 19 evaluations a radius here, 35 brentq, 57 toms748.
    tol = -math.log1p(-rtol)  # hi - lo <= rtol * hi  <=>  log(hi / lo) <= tol
    search = _RootSearch(slope, tol, math.log(limits[0]), math.log(limits[1]))
    u, fu = math.log(x0), f0
    for _ in range(200):
        if math.isnan(fu):  # no side: a broken law, not a point to search around
            raise RuntimeError(f"radius root search: f is NaN at x = {math.exp(u):.6g}")
        search.add(u, fu)
        if search.lo is not None and search.hi is not None:  # bracketed
            (u_lo, f_lo), (u_hi, f_hi) = search.lo, search.hi
            if u_hi - u_lo <= tol:
                s = (f_hi - f_lo) / (u_hi - u_lo)
                return math.exp(u_lo), (s if s < 0 else None)
            u = search.within_bracket()
        else:  # one side only
            if u >= search.u_max and fu > 0:
                return math.inf, None
            if u <= search.u_min and fu <= 0:
                return 0.0, None
            u = search.towards_root()
        fu = f(math.exp(u))
    raise RuntimeError("radius root search did not converge in 200 evaluations")


class _RootSearch:
    """The state of one `inside_root` search in u = log x, and where to evaluate next."""

    def __init__(self, slope: float, tol: float, u_min: float, u_max: float) -> None:
        self.slope, self.tol, self.push = slope, tol, 0.3 * tol
        self.u_min, self.u_max = u_min, u_max
        self.lo: tuple[float, float] | None = None  # (u, f) with f > 0, the largest such u seen
        self.hi: tuple[float, float] | None = None  # (u, f) with f <= 0, the smallest such u seen
        self.last: tuple[float, float] | None = None  # the latest point and the one before
        self.prev: tuple[float, float] | None = None
        self.step, self.repeats, self.widths = 0.0, 0, []  # last one-sided step, stalls

    def add(self, u: float, fu: float) -> None:
        """Takes in the point just evaluated."""
        self.prev, self.last = self.last, (u, fu)
        if self.prev is not None and (fu > 0) == (self.prev[1] > 0):
            self.repeats += 1
        else:
            self.repeats = 0
        if fu > 0 and (self.lo is None or u > self.lo[0]):
            self.lo = (u, fu)
        if fu <= 0 and (self.hi is None or u < self.hi[0]):
            self.hi = (u, fu)

    def within_bracket(self) -> float:
        """Next point inside a bracket wider than tol: regula falsi, pushed past the root."""
        (lo, f_lo), (hi, f_hi), (u, fu) = self.lo, self.hi, self.last
        width = hi - lo
        r = hi - f_hi * width / (f_hi - f_lo)  # regula falsi
        if self.repeats:  # the same end moved twice: the secant creeps up on the root from
            r += abs(r - u) if fu > 0 else -abs(r - u)  # that side; overshoot it
        self.widths.append(width)
        if not lo < r < hi or (len(self.widths) > 3 and width > 0.5 * self.widths[-4]):
            r = lo + 0.5 * width  # bisect where the secant stalls (very uneven ends)
        r += self.push if hi - r >= r - lo else -self.push
        return min(max(r, lo + 0.5 * self.tol), hi - 0.5 * self.tol)

    def towards_root(self) -> float:
        """Next point while every point is on one side: a step towards the root."""
        u, fu = self.last
        s, stalled = self.slope, False
        if self.prev is not None:  # both points on this side: their secant is the local slope
            (u1, f1), (u2, f2) = self.prev, self.last
            # u2 == u1 where a step fell below float64 resolution: no secant then
            if u2 != u1 and (f2 - f1) / (u2 - u1) < 0:
                s = (f2 - f1) / (u2 - u1)
            # f flat here (atoms of L, or exactly 0 over a range): widen instead
            stalled = abs(f2) >= 0.9 * abs(f1)
        d = abs(fu / s) if s < 0 else math.nan  # Newton: the root is |f / s| away
        if not math.isfinite(d) or stalled:
            d = max(d if math.isfinite(d) else 0.0, 2 * self.step if self.step > 0 else 1.0)
        # At most 4x the previous step (1 on the first): a bad slope must not fly off.
        self.step = min(d + self.push, 4 * self.step if self.step > 0 else 1.0)
        return min(max(u + self.step if fu > 0 else u - self.step, self.u_min), self.u_max)


class ExactEngine:
    """Structured worst-case radius for one noise; reuse it across p_A, norms and d."""

    def __init__(self, noise: Noise, config: ExactConfig | None = None) -> None:
        self.noise = noise
        self.config = config or ExactConfig()
        self.table = StructuredLogRatio(noise)
        self._scale = noise.sigma if math.isfinite(noise.sigma) else noise.alpha
        self._fisher = self._fisher_information()

    def _fisher_information(self) -> float:
        """Per-coordinate Fisher information, var(Z_h) / h^2 at small h (a starting guess only)."""
        h = 1e-4 * self._scale
        z = self.table.z_values(h)
        w = self.table.cell_mass
        if not np.all(np.isfinite(z)):
            return math.nan
        m = (w * z).sum() / w.sum()
        return float((w * (z - m) ** 2).sum() / w.sum() / h**2)

    def gap(self, a: float, k: int, p_a: float, p_b: float) -> float:
        """K at delta = a (1, ..., 1, 0, ...) with k ones."""
        if k == 1:
            values, mass = self.table.single_law(a)
        else:
            values, mass = self.table.law(a, k).values_and_mass()
        return float(boundary_gap(values, mass, p_a, p_b))

    def _initial_scale(self, k: int, p_a: float, p_b: float) -> float:
        # Normal approximation of L: the l2 radius is (Phi^-1(p_A) - Phi^-1(p_B)) / (2 sqrt(I)).
        spread = float(ndtri(min(p_a, 1 - 1e-12)) - ndtri(max(p_b, 1e-12))) / 2
        if math.isfinite(self._fisher) and self._fisher > 0:
            return max(spread, 1e-3) / math.sqrt(k * self._fisher)
        return self._scale / math.sqrt(k)

    def _normal_slope(self, p_a: float, p_b: float) -> float:
        """dK/dlog a at the boundary if L were normal (exact for Gaussian noise): with
        t = a sqrt(k I), K = Phi(z_A - t) - Phi(z_B + t), and t* = (z_A - z_B) / 2."""
        z_a, z_b = ndtri(min(p_a, 1 - 1e-12)), ndtri(max(p_b, 1e-12))
        t = max(float(z_a - z_b) / 2, 1e-3)
        return -2 * t * math.exp(-0.125 * float(z_a + z_b) ** 2) / math.sqrt(2 * math.pi)

    def boundary_scale(
        self,
        k: int,
        p_a: float,
        p_b: float,
        sign: float = 1.0,
        guess: float | None = None,
        slope: float | None = None,
    ) -> float:
        """a*(k): the largest a found inside the boundary, before the margin (inf if none).

        `guess` starts the search (default: the normal approximation); `slope` is the expected
        dK/dlog a there (default: the normal approximation's).
        """
        return self._boundary_scale(k, p_a, p_b, sign, guess, slope)[0]

    def _boundary_scale(
        self,
        k: int,
        p_a: float,
        p_b: float,
        sign: float,
        guess: float | None,
        slope: float | None,
    ) -> tuple[float, float | None]:
        """(a*(k), the slope dK/dlog a measured at it) for one sign of a."""
        if p_a <= p_b:
            return 0.0, None

        def f(a: float) -> float:
            return self.gap(sign * a, k, p_a, p_b)

        a = guess if guess is not None else self._initial_scale(k, p_a, p_b)
        slope = slope if slope is not None else self._normal_slope(p_a, p_b)
        limits = (1e-12 * self._scale, 1e12 * self._scale)
        return inside_root(f, a, f(a), slope, self.config.rtol, limits)

    def scales(self, ks: list[int], p_a: float, p_b: float, cache: dict[int, float]) -> None:
        """Fills cache[k] = a*(k) (margin applied) for the given k, both signs if asymmetric.

        Each root search starts from a guess: the two nearest k already solved, extended as a
        power law a ~ k^m (m in [-1, 0]; m = -1/2 is exact for Gaussian noise), and from the
        slope of K measured at the previous k's root, so most k take 2-3 evaluations.
        """
        signs = (1.0,) if self.noise.symmetric else (1.0, -1.0)
        slopes: dict[float, float | None] = dict.fromkeys(signs)
        for k in sorted(ks):
            if k in cache:
                continue
            guess = self._guess(k, cache)
            best = math.inf
            for s in signs:
                a, slope = self._boundary_scale(k, p_a, p_b, s, guess, slopes[s])
                slopes[s] = slope if slope is not None else slopes[s]
                best = min(best, a)
            cache[k] = best * (1 - self.config.margin)

    def _guess(self, k: int, cache: dict[int, float]) -> float | None:
        solved = sorted(
            (j for j in cache if 0 < cache[j] < math.inf), key=lambda j: abs(math.log(j / k))
        )
        if not solved:
            return None
        j = solved[0]
        slope = -0.5
        if len(solved) > 1:
            i = solved[1]
            slope = math.log(cache[i] / cache[j]) / math.log(i / j)
            slope = min(0.0, max(-1.0, slope))
        return cache[j] / (1 - self.config.margin) * (k / j) ** slope

    def radius(
        self, p_a: float, p_b: float, norms: list[float], dim: int
    ) -> dict[float, tuple[float, int]]:
        """Radius and worst k for each l_p norm: {p: (radius, k)}."""
        cfg = self.config
        cache: dict[int, float] = {}
        grid = k_grid(dim, cfg.k_ratio, cfg.dense_k)
        self.scales(grid, p_a, p_b, cache)
        for p in norms:
            if math.isinf(p):  # a*(k) is non-increasing in k: k = d is the minimiser
                continue
            best = min(grid, key=lambda k, p=p: lp_norm_of_structured(cache[k], k, p))
            i = grid.index(best)
            left, right = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            self.scales(refine_grid(left, right, cfg.refine_ratio), p_a, p_b, cache)
        out = {}
        for p in norms:
            k_best = min(cache, key=lambda k, p=p: lp_norm_of_structured(cache[k], k, p))
            out[p] = (lp_norm_of_structured(cache[k_best], k_best, p), k_best)
        return out
