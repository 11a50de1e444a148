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
    # the tests measure against closed forms at ~2e-5 at worst (README, "Soundness").
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


def _accelerate(grow: float) -> float:
    """Next bracket step: 8x the previous widening, and at least squaring it."""
    return max(1.0 + 8.0 * (grow - 1.0), grow * grow)


def bracketed_root(f, lo: float, hi: float, f_lo: float, f_hi: float, rtol: float) -> float:
    """Illinois regula falsi on f(lo) > 0 >= f(hi); returns the inside end lo at convergence.

    Each step lands at least half the tolerance inside the bracket: once the secant sits on the
    root, the next step then closes the bracket from the other side instead of creeping.
    """
    side = 0
    for _ in range(200):
        if hi - lo <= rtol * hi:
            break
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not lo < x < hi:
            x = 0.5 * (lo + hi)
        nudge = 0.5 * rtol * hi
        x = min(max(x, lo + nudge), hi - nudge)
        fx = f(x)
        if fx > 0:
            lo, f_lo = x, fx
            if side == 1:
                f_hi *= 0.5
            side = 1
        else:
            hi, f_hi = x, fx
            if side == -1:
                f_lo *= 0.5
            side = -1
    return lo


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

    def boundary_scale(
        self,
        k: int,
        p_a: float,
        p_b: float,
        sign: float = 1.0,
        guess: float | None = None,
        spread: float = 0.02,
    ) -> float:
        """a*(k): the largest a found inside the boundary, before the margin (inf if none).

        `guess` starts the bracket, whose first step is a factor 1 + `spread` (how far off the
        guess is expected to be); each further step is 8x wider.
        """
        if p_a <= p_b:
            return 0.0

        def f(a: float) -> float:
            return self.gap(sign * a, k, p_a, p_b)

        a = guess if guess is not None else self._initial_scale(k, p_a, p_b)
        grow = 1.0 + max(spread, self.config.rtol) if guess is not None else 2.0
        fa = f(a)
        if fa > 0:  # expand upwards until outside
            lo, f_lo = a, fa
            for _ in range(400):
                hi = lo * grow
                f_hi = f(hi)
                if f_hi <= 0:
                    break
                lo, f_lo, grow = hi, f_hi, _accelerate(grow)  # the guess is far off
                if lo > 1e12 * self._scale:
                    return math.inf
            else:
                return math.inf
        else:  # shrink until inside
            hi, f_hi = a, fa
            for _ in range(400):
                lo = hi / grow
                f_lo = f(lo)
                if f_lo > 0:
                    break
                hi, f_hi, grow = lo, f_lo, _accelerate(grow)
                if hi < 1e-12 * self._scale:
                    return 0.0
            else:
                return 0.0
        return bracketed_root(f, lo, hi, f_lo, f_hi, self.config.rtol)

    def scales(self, ks: list[int], p_a: float, p_b: float, cache: dict[int, float]) -> None:
        """Fills cache[k] = a*(k) (margin applied) for the given k, both signs if asymmetric.

        Each root search starts from a guess: the two nearest k already solved, extended as a
        power law a ~ k^m (m in [-1, 0]; m = -1/2 is exact for Gaussian noise), so a tight
        bracket is usually found in one or two steps.
        """
        signs = (1.0,) if self.noise.symmetric else (1.0, -1.0)
        spread = 0.02  # how far off the last guess was: sizes the next bracket
        for k in sorted(ks):
            if k in cache:
                continue
            guess = self._guess(k, cache)
            a = min(self.boundary_scale(k, p_a, p_b, s, guess, 4 * spread) for s in signs)
            if guess is not None and 0 < a < math.inf:
                spread = abs(math.log(a / guess))
            cache[k] = a * (1 - self.config.margin)

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
