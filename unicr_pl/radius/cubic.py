"""Gaussian domination in the cubic order: a sharper l2 rate for the differential method.

For a symmetric score s = -(log f)' with s^2 <=_icx c^2 Z^2 (increasing convex order, Z
standard normal), every unit direction v has E g(S_v) <= E g(c Z) for each g whose second
derivative is non-negative and convex (Eaton 1970; Pinelis 1994; the replacement proof is in
docs/soundness.md, section 2). The majorant g = 4 / (27 h^2) (x - t + h)_+^3 of (x - t)_+
then bounds the rate at which a probability u can move along v:

    Phi_v(u) <= u t + E(S_v - t)_+ <= c (u t' + 4 m3(t' - h) / (27 h^2)),  t = c t',

with m3(x) = E(Z - x)_+^3 in closed form. For Laplace noise (s = +-1/b, c = 1/b = sqrt(I)) it
lifts the l2 radius from 0.80 of the family value (Gaussian domination in the convex order
needs c = 1.25 / b) to 0.84-0.89. Every rate here is a family of lines in u, each an upper
bound of sup_v Phi_v(u) for every u, which is what `LineG` integrates.

Plain numpy / scipy; no Lightning.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, ndtr

_SQRT_2PI = math.sqrt(2 * math.pi)
_T_CUBIC = np.linspace(-1.0, 9.0, 2001)  # t' of the cubic lines (u down to ~1e-19)
_H = np.geomspace(1e-3, 20.0, 400)  # majorant widths h tried per t'
_U_FISHER = np.geomspace(1e-20, 0.5, 600)  # tangent points of sqrt(u (1 - u))


def mills_ratio(x: np.ndarray) -> np.ndarray:
    """Q(x) / phi(x) (Mills' ratio), accurate in the far right tail."""
    return erfcx(x / math.sqrt(2)) * math.sqrt(math.pi / 2)


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def cubic_excess(x: np.ndarray) -> np.ndarray:
    """m3(x) = E(Z - x)_+^3 = (x^2 + 2) phi(x) - x (x^2 + 3) Q(x), for x <= 10.

    Right of 0 it is phi(x) times a difference that cancels to ~6 / x^4: written with Mills'
    ratio its relative error stays below ~1e-11 up to x = 10 (checked against quadrature in
    tests/test_cubic.py)."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(x > 10):
        raise ValueError("cubic_excess is only accurate for x <= 10")
    right = _phi(x) * ((x * x + 2) - x * (x * x + 3) * mills_ratio(np.maximum(x, 0.0)))
    left = (x * x + 2) * _phi(x) - x * (x * x + 3) * ndtr(-x)  # no cancellation for x < 0
    return np.where(x >= 0, right, left)


def cubic_lines(c: float) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts) of lines u -> slope u + intercept, each >= sup_v Phi_v(u) for every
    u when s^2 <=_icx c^2 Z^2: one per t' of the grid, with the best width h of the grid
    (any h > 0 gives a valid majorant, so the search only affects tightness)."""
    t, h = _T_CUBIC[:, None], _H[None, :]
    e = 4.0 * cubic_excess(t - h) / (27.0 * h * h)
    return c * _T_CUBIC, c * e.min(axis=1)


def gaussian_lines(c: float) -> tuple[np.ndarray, np.ndarray]:
    """Lines above c phi(Phi^-1(u)) = inf_t c (u t + E(Z - t)_+) (Gaussian domination)."""
    t = np.linspace(0.0, 9.0, 901)
    psi = _phi(t) * (1 - t * mills_ratio(t))
    return c * t, c * psi


def fisher_lines(fisher: float) -> tuple[np.ndarray, np.ndarray]:
    """Tangents of the concave sqrt(I u (1 - u)) (Cauchy-Schwarz), so lines above it."""
    u0 = _U_FISHER
    root = np.sqrt(u0 * (1 - u0))
    slope = (1 - 2 * u0) / (2 * root)
    scale = math.sqrt(fisher)
    return scale * slope, scale * (root - u0 * slope)


def _chi2_excess_log(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log of a lower bound of chi(x) = E(Z^2 - x)_+, and chi'(x) / chi(x)), x >= 0.

    chi(x) = 2 phi(y) B(y) with y = sqrt(x), B(y) = y + (1 - y^2) R(y), R Mills' ratio, and
    chi'(x) = -P(Z^2 > x) = -2 phi(y) R(y), so chi' / chi = -R / B, free of underflow. B cancels
    to ~2 / y for large y: beyond y = 30 it is y + (1 - y^2) R_5(y), R_5 the asymptotic series
    of R up to +105 / y^9, an upper bound of R (the series' partial sums alternate about it),
    so a lower bound of B (relative error < 1e-9 there)."""
    y = np.sqrt(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        series = 2 / y - 4 / y**3 + 18 / y**5 - 120 / y**7 + 105 / y**9
        bracket = np.where(y < 30, (y + (1 - y * y) * mills_ratio(y)) * (1 - 1e-12), series)
        log_val = math.log(2) - 0.5 * y * y - math.log(_SQRT_2PI) + np.log(bracket)
        ratio = -mills_ratio(y) / bracket
    return log_val, ratio


def _square_excess(r: np.ndarray, lo, hi, m, w) -> np.ndarray:
    """Upper bounds of E(s^2 - r)_+ over the finite cells: the chord of the convex
    s -> (s^2 - r)_+ on [lo_j, hi_j], weighted by the exact cell means m_j."""
    point = hi <= lo  # a cell of zero width: s = lo there, mass w
    span = np.where(point, 1.0, hi - lo)
    wa = np.where(point, w, np.maximum(m - lo * w, 0.0))
    wb = np.where(point, 0.0, np.maximum(hi * w - m, 0.0))
    out = np.empty(r.size)
    for i in range(0, r.size, 256):
        rr = r[i : i + 256, None]
        chord = np.maximum(hi * hi - rr, 0) * wa + np.maximum(lo * lo - rr, 0) * wb
        out[i : i + 256] = (chord / span).sum(axis=1)
    return out


def cubic_domination_constant(lo, hi, m, w, tail_s2: float | None) -> float:
    """The smallest c (to ~1e-6) with E(s^2 - r)_+ <= c^2 chi(r / c^2) for every r >= 0 of
    the grid, i.e. s^2 <=_icx c^2 Z^2 there; cells as in `ScoreLaw` (on cell j, s in
    [lo_j, hi_j], mass w_j, int s f = m_j). Unbounded cells: `tail_s2` bounds int s^2 f over
    them (added for every r: (s^2 - r)_+ <= s^2), and the caller vouches for the tail beyond
    the grid; None makes them fatal (inf).

    Checked interval by interval: the chord of the convex, decreasing left side below the
    tangent of the convex right side at the interval's middle, in logs."""
    fin = np.isfinite(lo) & np.isfinite(hi)
    if not np.all(fin) and tail_s2 is None:
        return math.inf
    lo, hi, m, w = lo[fin], hi[fin], m[fin], w[fin]
    sq = np.concatenate([lo * lo, hi * hi])
    quantiles = np.quantile(sq, np.linspace(0, 1, 1000))
    even = sq.max() * np.linspace(0, 1, 2000) ** 2
    r = np.unique(np.concatenate([[0.0], quantiles, even]))
    lhs = _square_excess(r, lo, hi, m, w) + (tail_s2 or 0.0)
    r0, r1, e0, e1 = r[:-1], r[1:], lhs[:-1], lhs[1:]
    mid = 0.5 * (r0 + r1)

    def ok(c: float) -> bool:
        log_val, ratio = _chi2_excess_log(mid / (c * c))
        with np.errstate(divide="ignore", invalid="ignore"):
            base = log_val + 2 * math.log(c)
            t0 = base + np.log(np.maximum(1 + ratio * (r0 - mid) / (c * c), 0))
            t1 = base + np.log(np.maximum(1 + ratio * (r1 - mid) / (c * c), 0))
            good = ((e0 <= 0) | (np.log(e0) <= t0)) & ((e1 <= 0) | (np.log(e1) <= t1))
        return bool(np.all(good))

    lo_c = math.sqrt(max(float(lhs[0]), 1e-300))  # c^2 >= E s^2 (r = 0)
    hi_c = lo_c * 1e3
    if not ok(hi_c):
        return math.inf
    for _ in range(60):  # bisection in log c; the test need not be monotone in c ...
        mid_c = math.sqrt(lo_c * hi_c)
        lo_c, hi_c = (lo_c, mid_c) if ok(mid_c) else (mid_c, hi_c)
    c = hi_c * (1 + 1e-6)
    while not ok(c):  # ... so the answer is confirmed, or grown until it holds
        c *= 1.001
    return c
