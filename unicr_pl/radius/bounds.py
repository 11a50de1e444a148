"""Proven lower bounds of the certified radius over *all* directions of the l_p ball.

The exact engine minimises over the structured family (k equal non-zero coordinates), an
*upper* bound of the true worst case. This module computes sound *lower* bounds
(docs/soundness.md has the proofs):

- closed forms where the worst case is known: Gaussian (Cohen et al. 2019) in every norm,
  uniform in l1 / l2 / l_inf (cube overlap; the worst case is the axis or the diagonal);
- the differential method (Yang et al. 2020): R >= (G(p_A) - G(p_B)) / 2 with
  G(p) = int_{1/2}^p dq / Phi*(q) and Phi*(q) the largest rate at which a probability q can
  move along a unit direction. l1: Phi* is the top-q mean of the 1-D score s = -(log f)';
  l2: Phi* <= c phi(Phi^-1(q)) when s <=_cx c Z (Gaussian domination) and
  Phi* <= sqrt(I q (1 - q)) (Cauchy-Schwarz, I the Fisher information), and the sharper
  cubic-order lines of `unicr_pl.radius.cubic` when s^2 <=_icx c^2 Z^2 (Laplace: c = sqrt(I));
- the Renyi-divergence route (Li et al. 2019), any l_p: the divergence of the product noise is
  a sum of 1-D terms g(|delta_i|), at most d h(r^p / d) over the l_p ball (h the least concave
  majorant of u -> g(u^(1/p))), certified while below Li et al.'s threshold for some order;
- norm equivalence between l1, l2 and l_inf.

Every numerically computed bound loses a relative `BOUND_MARGIN`.
"""

from __future__ import annotations

import bisect
import math
import warnings

import numpy as np
import torch
from scipy import integrate
from scipy.special import expit, logsumexp, ndtri

from unicr_pl.noises import Noise
from unicr_pl.radius import closed_forms, cubic
from unicr_pl.radius.cache import BoundedLRU

BOUND_MARGIN = 1e-4  # relative, off every numerically computed bound (quadrature, grids)
# Bounds whose value is the true worst case (closed forms, no margin needed).
EXACT_BOUNDS = ("cohen-gaussian", "uniform-cube-overlap")
# Closed forms evaluated to float64 precision: no numerical margin (not all of them are tight).
CLOSED_FORMS = (*EXACT_BOUNDS, "yang-pareto-l1")
_T_MAX = 690.0  # log-odds range of the score law's grid; the mass beyond is < 1e-299
_CENTRE = np.linspace(0.0, 30.0, 6001)  # log-odds, fine where the mass is
_TAIL = np.geomspace(30.0, _T_MAX, 1200)[1:]
_U_TAU = np.linspace(0.0, 40.0, 2001)  # u = expit(-tau) in (0, 1/2]: the grid of G
_N_T = 3000  # thresholds t of E(s - t)_+
_Z_CHECK = 1e-6  # the density's normalisation must match the quantiles to this


class BoundUnavailable(ValueError):
    """A bound does not apply to this noise; the message says why."""


def _grid_logodds(symmetric: bool) -> np.ndarray:
    half = np.concatenate([_CENTRE, _TAIL])
    return np.concatenate([-half[::-1], half[1:]])


def _score(noise: Noise, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log f up to a constant, score s = -(log f)') at x, by autograd of `log_prob`."""
    # Callers may run under no_grad / inference_mode (certification loops): re-enable autograd.
    with torch.inference_mode(False), torch.enable_grad():
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        lp = noise.log_prob(xt)
        (grad,) = torch.autograd.grad(lp.sum(), xt)
    return lp.detach().numpy(), -grad.numpy()


class ScoreLaw:
    """The law of s(X) for one coordinate, as cells: on cell j, s lies in [lo_j, hi_j]
    (possibly infinite), carries mass w_j, and int_cell s f = m_j = f(x_j) - f(x_j+1) exactly
    (s f = -f'), so cell means need no quadrature of s.

    Raises BoundUnavailable where the score cannot be used: NaN or unbounded on both sides of
    a cell, a density that does not vanish at its support ends (uniform: no score).
    """

    def __init__(self, noise: Noise) -> None:
        t = _grid_logodds(noise.symmetric)
        x = noise.quantile_logodds(t)
        if not np.all(np.diff(x) > 0):
            keep = np.concatenate([[True], np.diff(x) > 0])
            t, x = t[keep], x[keep]
        # Cell masses from whichever tail is small, so that they keep full relative precision.
        upper = t[1:] > 0
        inner = np.where(upper, expit(-t[:-1]) - expit(-t[1:]), expit(t[1:]) - expit(t[:-1]))
        w = np.concatenate([[expit(t[0])], inner, [expit(-t[-1])]])
        mid = 0.5 * (x[1:] + x[:-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp, s = _score(noise, x)
            lp_mid, s_mid = _score(noise, mid)
        top = float(np.max(lp[np.isfinite(lp)]))
        dens, dens_mid = np.exp(lp - top), np.exp(lp_mid - top)
        # Normalisation by Simpson's rule on each cell against the quantiles' exact masses: the
        # median ratio ignores the few cells at a cusp (e.g. |x|^beta, beta < 1, at 0).
        simpson = np.diff(x) / 6 * (dens[:-1] + 4 * dens_mid + dens[1:])
        central = w[1:-1] > 1e-5
        ratio = simpson[central] / w[1:-1][central]
        z = float(np.median(ratio))
        spread = np.quantile(np.abs(ratio / z - 1), 0.9)
        err = np.sum(np.abs(simpson / z - w[1:-1]))  # L1 mass error over all cells
        tabulated = noise.name == "custom"  # quantiles interpolated from a table
        if tabulated:  # the cells' own quadrature masses, not the approximate quantiles'
            w = np.concatenate([[w[0]], simpson / z, [w[-1]]])
        if not (np.isfinite(z) and z > 0 and spread < (1e-3 if tabulated else 1e-6)):
            raise BoundUnavailable(
                f"the density does not match its quantiles (mass error {err:.1e})"
            )
        f = dens / z
        self._top, self._z = top, float(z)
        if max(f[0], f[-1]) > 1e-12 * f.max():
            raise BoundUnavailable("the density does not vanish at its support ends (no score)")
        self.z_error = float(spread)
        self.f_max = float(f.max())
        m = np.concatenate([[-f[0]], f[:-1] - f[1:], [f[-1]]])
        lo, hi = self._cell_ranges(s, s_mid, m, w)
        self.lo, self.hi, self.m, self.w = lo, hi, m, w
        self.interior_unbounded = bool(np.any(~np.isfinite(hi[1:-1])))
        self.tail_unbounded = bool(not np.isfinite(hi[0]) or not np.isfinite(hi[-1]))
        self._noise = noise
        self._x = x
        self._tail_s2: float | None = None

    @staticmethod
    def _cell_ranges(s, s_mid, m, w):
        """[lo, hi] of s on each cell from its end and middle values and its mean."""
        n = len(w)
        lo, hi = np.empty(n), np.empty(n)
        ends = [(np.nan, s[0], np.nan)]
        ends += [(s[j], s_mid[j], s[j + 1]) for j in range(len(s) - 1)]
        ends += [(s[-1], np.nan, np.nan)]
        mean = m / np.where(w > 0, w, 1.0)
        for j, vals in enumerate(ends):
            v = np.array([a for a in vals if np.isfinite(a)])
            if v.size == 0:
                raise BoundUnavailable("the score (-d log f / dx) is NaN or infinite on a cell")
            a, b = float(v.min()), float(v.max())
            if v.size == 3 and not min(vals[0], vals[2]) <= vals[1] <= max(vals[0], vals[2]):
                # An interior extremum: for a parabola through three equispaced points the
                # sampled extreme misses the true one by at most a third of their spread.
                if vals[1] > max(vals[0], vals[2]):
                    b += (b - a) / 3
                else:
                    a -= (b - a) / 3
            tol = 1e-7 * (abs(a) + abs(b)) + 1e-300
            full = v.size == 3
            if mean[j] > b + tol:
                if full:  # the mean outside the range: not monotone enough, widen
                    b = mean[j] + (b - a)
                else:
                    b = math.inf  # one end unknown: monotone towards +inf there
            elif mean[j] < a - tol:
                if full:
                    a = mean[j] - (b - a)
                else:
                    a = -math.inf
            elif not full and 0 < j < n - 1:
                raise BoundUnavailable("the score is NaN or infinite inside the support")
            lo[j], hi[j] = a - tol, b + tol
        return lo, hi

    @np.errstate(invalid="ignore", divide="ignore")
    def excess(self, t: np.ndarray, sign: float = 1.0) -> np.ndarray:
        """Upper bounds of E(sign * s - t)_+ for each t (the chord of the convex (.)_+)."""
        lo, hi, m = (self.lo, self.hi, self.m) if sign > 0 else (-self.hi, -self.lo, -self.m)
        w = self.w
        out = np.zeros(len(t))
        fin = np.isfinite(lo) & np.isfinite(hi)
        up = np.isfinite(lo) & ~np.isfinite(hi)
        down = ~np.isfinite(lo) & np.isfinite(hi)
        span = np.where(fin, hi - lo, 1.0)
        wa = np.where(fin, np.maximum(m - lo * w, 0.0), 0.0)  # weight of the chord's hi end
        wb = np.where(fin, np.maximum(hi * w - m, 0.0), 0.0)
        for i in range(0, len(t), 256):
            tt = t[i : i + 256, None]
            chord = (np.maximum(hi - tt, 0) * wa + np.maximum(lo - tt, 0) * wb) / span
            val = np.where(fin, chord, 0.0)
            val += np.where(up, m - np.minimum(tt, np.where(up, lo, 0.0)) * w, 0.0)
            val += np.where(down, np.maximum(np.where(down, hi, 0.0) - tt, 0) * w, 0.0)
            out[i : i + 256] = val.sum(axis=1)
        return out

    def thresholds(self) -> np.ndarray:
        """t >= 0 where E(s - t)_+ is evaluated: the score's own quantile points."""
        vals = np.concatenate([self.lo, self.hi, -self.lo, -self.hi])
        vals = vals[np.isfinite(vals) & (vals >= 0)]
        q = np.quantile(vals, np.linspace(0, 1, _N_T // 3))
        # Square-root spacing: steps shrink like 1 / t, as fast as the Gaussian excess decays.
        even = vals.max() * np.sqrt(np.linspace(0, 1, 2 * _N_T // 3))
        return np.unique(np.concatenate([[0.0], q, even]))

    def fisher(self) -> float:
        """An upper bound of I = E[s(X)^2] (inf where it diverges)."""
        fin = np.isfinite(self.lo) & np.isfinite(self.hi)
        lo, hi, m, w = self.lo[fin], self.hi[fin], self.m[fin], self.w[fin]
        # s^2 lies below its chord (lo + hi) s - lo hi on [lo, hi]; int s f = m is exact.
        total = float(np.sum(np.maximum((lo + hi) * m - lo * hi * w, 0.0)))
        return total * (1 + 1e-6) + self.tail_s2()  # unbounded cells: adaptive quadrature

    def tail_s2(self) -> float:
        """An upper bound of int s^2 f over the cells where s is unbounded (inf if it diverges);
        computed once (the Fisher information and the cubic order both need it)."""
        if self._tail_s2 is not None:
            return self._tail_s2
        total = 0.0
        for j in np.flatnonzero(~(np.isfinite(self.lo) & np.isfinite(self.hi))):
            a = -math.inf if j == 0 else float(self._x[j - 1])
            b = math.inf if j == len(self.w) - 1 else float(self._x[j])
            total += self._quad_s2f(a, b)
        self._tail_s2 = total * (1 + 1e-6)
        return self._tail_s2

    def _quad_s2f(self, a: float, b: float) -> float:
        """int_a^b s^2 f by adaptive quadrature; inf where QUADPACK reports divergence."""

        def g(x: float) -> float:
            lp, s = _score(self._noise, np.array([x]))
            return float(s[0] ** 2 * np.exp(lp[0] - self._top)) / self._z

        with warnings.catch_warnings():
            warnings.simplefilter("error", integrate.IntegrationWarning)
            try:
                val, abserr = integrate.quad(g, a, b, limit=200)
            except (integrate.IntegrationWarning, ZeroDivisionError, ValueError):
                return math.inf
        return val + abserr if math.isfinite(val) else math.inf


def _excess_over_phi(x: np.ndarray) -> np.ndarray:
    """A lower bound of psi(x) / phi(x), psi(x) = E(Z - x)_+ = phi(x) - x Q(x), x >= 0."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        direct = (1 - x * cubic.mills_ratio(x)) * (1 - 1e-12)
        series = 1 / x**2 - 3 / x**4  # alternating asymptotic series truncated: a lower bound
    return np.where(x < 8, direct, series)


def _excess_both(law: ScoreLaw) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds t >= 0 and upper bounds of max(E(s - t)_+, E(-s - t)_+): both signs, so
    that asymmetric noise is covered (the unit ball holds v and -v)."""
    cached = getattr(law, "_both", None)
    if cached is None:
        t = law.thresholds()
        cached = law._both = (t, np.maximum(law.excess(t, 1.0), law.excess(t, -1.0)))
    return cached


def _dominated(c: np.ndarray, t0: np.ndarray, t1: np.ndarray, e0, e1) -> np.ndarray:
    """Whether the chord of E(s - t)_+ over [t0, t1] (above the convex excess) lies below the
    tangent of c psi(t / c) at the midpoint (below the convex Gaussian excess): then
    E(s - t)_+ <= c psi(t / c) on the whole interval. In units of phi(m / c), in logs, so
    that the far tail does not underflow."""
    m = 0.5 * (t0 + t1)
    x = m / c
    log_phi = -0.5 * x * x - 0.5 * math.log(2 * math.pi)
    value, slope = c * _excess_over_phi(x), -cubic.mills_ratio(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok0 = np.log(e0) <= log_phi + np.log(np.maximum(value + slope * (t0 - m), 0))
        ok1 = np.log(e1) <= log_phi + np.log(np.maximum(value + slope * (t1 - m), 0))
    return (ok0 | (e0 <= 0)) & (ok1 | (e1 <= 0))


def gaussian_domination_constant(law: ScoreLaw) -> float:
    """The smallest c (to 1e-6) with E(+-s - t)_+ <= c psi(t / c) for all t >= 0, i.e.
    s <=_cx c Z (checked interval by interval, `_dominated`); inf where the score is
    unbounded inside the support. Beyond the last threshold see `_subgaussian_score_tail`.
    """
    if law.interior_unbounded:
        return math.inf
    t, e = _excess_both(law)
    t0, t1, e0, e1 = t[:-1], t[1:], e[:-1], e[1:]
    scale = max(float(t.max()), 1e-300)
    lo, hi = np.full(t0.shape, 1e-9 * scale), np.full(t0.shape, 1e9 * scale)
    for _ in range(120):  # bisection in log c per interval
        c = np.sqrt(lo * hi)
        ok = _dominated(c, t0, t1, e0, e1)
        hi, lo = np.where(ok, c, hi), np.where(ok, lo, c)
    c = float(hi.max()) * (1 + 1e-6)
    while not np.all(_dominated(np.full(t0.shape, c), t0, t1, e0, e1)):
        c *= 1.001  # the criterion need not be monotone in c: confirm the answer, or grow it
    return c


class LineG:
    """G(p) = int_{1/2}^p dq / Phi*(q) from below, with Phi*(u) <= u t_i + e(t_i) on each
    interval of a grid of u = min(q, 1 - q): integrating 1 / (u t + e) exactly gives a
    pointwise lower bound of the integrand, so differences G(p_A) - G(p_B) are lower bounds.
    """

    def __init__(self, t: np.ndarray, e: np.ndarray) -> None:
        """Lines u -> u t_j + e_j, each an upper bound of Phi*(u) for every u in (0, 1/2]."""
        u = expit(-_U_TAU)  # descending from 1/2
        u_mid = expit(-0.5 * (_U_TAU[1:] + _U_TAU[:-1]))
        pick = np.argmin(u_mid[:, None] * t[None, :] + e[None, :], axis=1)
        self.u, self.t, self.e = u, t[pick], e[pick]
        pieces = self._piece(u[:-1], u[1:])
        self.h = np.concatenate([[0.0], np.cumsum(pieces)])  # H(u_i) = int_{u_i}^{1/2}

    @classmethod
    def from_law(cls, law: ScoreLaw) -> LineG:
        """The l1 rate: Phi*(u) <= u t + max(E(s - t)_+, E(-s - t)_+) for every t >= 0."""
        return cls(*_excess_both(law))

    @np.errstate(divide="ignore", invalid="ignore")
    def _piece(self, upper: np.ndarray, lower: np.ndarray, i=None) -> np.ndarray:
        t = self.t if i is None else self.t[i]
        e = self.e if i is None else self.e[i]
        base = lower * t + e
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.log1p((upper - lower) * t / base) / t
        return np.where(t > 0, val, (upper - lower) / e)

    def H(self, u: np.ndarray) -> np.ndarray:
        """int_u^{1/2} of the lower-bound integrand, u in [0, 1/2] (0 below the grid)."""
        u = np.clip(np.asarray(u, dtype=np.float64), self.u[-1], 0.5)
        i = np.clip(np.searchsorted(-self.u, -u, side="right") - 1, 0, len(self.t) - 1)
        return self.h[i] + self._piece(self.u[i], u, i)

    def G(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        return np.where(p >= 0.5, self.H(1 - p), -self.H(p))


def _subgaussian_score_tail(noise: Noise, c: float) -> bool:
    """Whether the score's tail beyond the grid is provably lighter than c Z's (so that the
    convex-order check on the grid extends to every t). Known families only."""
    beta = getattr(noise, "beta", None)
    if noise.name == "gennormal":  # P(s > r) ~ exp(-(r / beta)^(beta / (beta - 1)))
        return 1 < beta < 2
    if noise.name == "expmix":  # s = (beta + 2 (1 - beta) y) / alpha: variance proxy below
        return beta < 1 and 2 * (1 - beta) / noise.alpha**2 < c * c
    return False


def _square_tail_known(noise: Noise, fisher: float) -> bool:
    """Whether s^2 beyond the score law's grid is known to be bounded or lighter-tailed than
    any c^2 Z^2 the check can return (c^2 >= I): Pareto's score is bounded by its value at 0
    (inside the grid), and a score lighter than c Z has s^2 lighter than c^2 Z^2."""
    return noise.name == "pareto" or _subgaussian_score_tail(noise, math.sqrt(fisher))


# ---- the Renyi-divergence route (Li et al., NeurIPS 2019); docs/soundness.md section 3 ----

RENYI_ORDERS = (1.1, 1.2, 1.3, 1.4, 1.5, 1.65, 1.8, 2.0, 2.5, 3.0, 4.0)
# Symmetric densities nonincreasing in |x| (what makes the divergence nondecreasing in the shift).
RENYI_FAMILIES = frozenset(
    {"gaussian", "laplace", "hypsecant", "gennormal", "cauchy", "pareto", "lapgauss", "expmix"}
)
_DE_STEP = 1 / 16  # step of the double-exponential rules; the rule at twice it gives the error
_DE_S = 3.5  # nodes |s| <= 3.5: the pieces stop e^-26 scales from their ends, e^26 beyond them
_RENYI_RATIO = 1.004  # geometric step of the shift grid: the step bound costs about this
_RENYI_RTOL = 1e-6  # relative, added to every divergence on top of the rule's error estimate
_RENYI_DISTRUST = 1e-3  # the two rules differ by more (relative): the divergence is set to inf
_RENYI_T = (3e-4, 30.0)  # shifts / scale; the lower end is divided by sqrt(d)
_SERIES = 1e-3  # |order D| below this: phi(D) by its Taylor series (relative error < 1e-9)


def renyi_threshold(order, p_a, p_b) -> np.ndarray:
    """Li et al.'s Lemma: a class distribution Q whose top class differs from P's (top
    probability >= p_A, others <= p_B) has D_order(Q || P) >= -log(1 - p_A - p_B + 2 M), M the
    power mean of order 1 - order of p_A and p_B; computed in logs (p_B^(1 - order) overflows)."""
    r = 1.0 - np.asarray(order, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_m = (np.logaddexp(r * np.log(p_a), r * np.log(p_b)) - math.log(2.0)) / r
        rest = np.maximum(1.0 - p_a - p_b, 0.0)  # clipping only lowers the threshold
        return -np.log(rest + 2.0 * np.exp(log_m))


def _de_rule() -> tuple[np.ndarray, ...]:
    """Nodes and weights (step included) of exp-sinh on [0, inf) (x = c e^(pi/2 sinh s)) and
    tanh-sinh on [0, 1] (v and 1 - v, both kept to full precision near their ends)."""
    k = round(_DE_S / _DE_STEP)
    s = np.linspace(-_DE_S, _DE_S, 2 * k + 1)  # odd count: every other node is the 2h rule
    grow = np.exp(0.5 * math.pi * np.sinh(s))
    d_grow = grow * 0.5 * math.pi * np.cosh(s) * _DE_STEP
    v, w = expit(math.pi * np.sinh(s)), expit(-math.pi * np.sinh(s))
    return grow, d_grow, v, w, math.pi * np.cosh(s) * v * w * _DE_STEP


def _log_density(noise: Noise, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return noise.log_prob(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _log_normaliser(noise: Noise, scale: float, rule) -> tuple[float, float]:
    """(log Z, relative error estimate) of Z = int e^l over both half-lines (exp-sinh)."""
    grow, d_grow = rule[0], rule[1]
    lp = np.stack([_log_density(noise, scale * grow), _log_density(noise, -scale * grow)])
    top = float(lp.max())
    h, h2 = (x.sum() for x in _two_rules(np.exp(lp - top), scale * d_grow))
    return top + math.log(h), abs(h / h2 - 1) + 1e-15


def _two_rules(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums over the last axis with the step-h rule and the step-2h rule (every other node)."""
    terms = values * weights
    return terms.sum(-1), 2.0 * terms[..., ::2].sum(-1)


def _renyi_nodes(t: np.ndarray, scale: float, rule) -> tuple[np.ndarray, ...]:
    """x, x - t and weights over (-inf, 0], [0, t], [t, inf) for each shift t (rows): the
    pieces end at the density's possible cusps (0 and t), where the rules cluster their nodes."""
    grow, d_grow, v, w, dv = rule
    t = t[:, None]
    c = scale + t  # the tails spread with the shift: the tilted integrand peaks near order * t
    x = np.concatenate([-c * grow, t * v, t + c * grow], axis=1)
    shifted = np.concatenate([-c * grow - t, -t * w, c * grow], axis=1)
    weights = np.concatenate([c * d_grow, t * dv, c * d_grow], axis=1)
    return x, shifted, weights


def _phi(order: float, diff: np.ndarray, p0: np.ndarray, l0: np.ndarray) -> np.ndarray:
    """mu phi(D), phi(D) = e^(order D) - 1 - order (e^D - 1) >= 0, without cancellation."""
    a = order
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.exp(a * diff + l0) - (1 - a) * p0 - a * np.exp(diff + l0)
    series = 0.5 * a * (a - 1) * diff**2 * (1 + (a + 1) * diff / 3 + (a * a + a + 1) * diff**2 / 12)
    return np.where(np.abs(a * diff) < _SERIES, p0 * series, direct)


def _renyi_chunk(noise, orders, t, scale, rule, log_z: float, z_err: float) -> np.ndarray:
    """Upper bounds of g_order(t) = D_order(mu(. - t) || mu), [orders, shifts], inf where the
    rule cannot vouch for its value.

    F - 1 = E_mu[phi(D)] with D = l(X - t) - l(X) (E_mu[e^D - 1] = 0): non-negative terms, so
    it keeps its relative precision however small t is. Where F > 1e200, log F by log-sum-exp
    of the tilted density instead. Upper value: the step-h sum plus its distance to the
    step-2h sum, the outermost nodes' terms (truncation) and relative _RENYI_RTOL + Z's error."""
    x, shifted, weights = _renyi_nodes(t, scale, rule)
    l0 = _log_density(noise, x)
    diff = _log_density(noise, shifted) - l0
    l0 -= log_z
    p0, log_w = np.exp(l0), np.log(weights)
    n = rule[0].size
    ends = [0, n - 1, n, 2 * n - 1, 2 * n, 3 * n - 1]
    out = np.empty((len(orders), len(t)))
    for i, a in enumerate(orders):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: the log-domain branch
            phi = _phi(a, diff, p0, l0)
            h, h2 = _two_rules(phi, weights)
            tail = np.abs(phi * weights)[:, ends].sum(-1)
            g = np.log1p(h + abs(h - h2) + tail + (_RENYI_RTOL + z_err) * h) / (a - 1)
            ok = abs(h - h2) <= _RENYI_DISTRUST * h
            big = ~(h < 1e200)  # overflow: F - 1 keeps its relative precision up to there
        if np.any(big):
            tilted = a * diff[big] + l0[big] + log_w[big]
            lh, lh2 = logsumexp(tilted, axis=1), math.log(2.0) + logsumexp(tilted[:, ::2], axis=1)
            tail = np.exp(tilted[:, ends] - lh[:, None]).sum(-1)
            err = abs(lh - lh2) + np.log1p(tail + _RENYI_RTOL + z_err)
            g[big], ok[big] = (lh + err) / (a - 1), abs(lh - lh2) <= _RENYI_DISTRUST
        out[i] = np.where(ok & np.isfinite(g), np.maximum(g, 0.0), math.inf)
    return out


def renyi_table(noise: Noise, orders, t: np.ndarray, scale: float) -> np.ndarray:
    """Upper bounds of g_order(t_j) for every order and shift (`_renyi_chunk`), by chunks."""
    rule = _de_rule()
    log_z, z_err = _log_normaliser(noise, scale, rule)
    parts = [
        _renyi_chunk(noise, orders, t[i : i + 128], scale, rule, log_z, z_err)
        for i in range(0, len(t), 128)
    ]
    return np.concatenate(parts, axis=1)


class RenyiBound:
    """Li et al.'s certificate for one (noise, d): with g the 1-D divergence of a shift, the
    sup of sum_i g(|delta_i|) over the l_p ball of radius r is at most d h(r^p / d), h the
    least concave majorant of u -> g(u^(1/p)) on [0, r^p] (exactly d g(r) for l_inf); the
    prediction holds while that is below `renyi_threshold` for some order.

    g is bounded on a geometric grid of shifts t_j; since g is nondecreasing in the shift
    (symmetric, unimodal density), g <= G_(j+1) on (t_j, t_(j+1)].
    """

    def __init__(self, noise: Noise, dim: int, orders=RENYI_ORDERS) -> None:
        if noise.name not in RENYI_FAMILIES or not noise.symmetric:
            raise BoundUnavailable(
                "needs a built-in symmetric density nonincreasing in |x| (the divergence must "
                "grow with the shift)"
            )
        self.dim, self.orders = int(dim), np.asarray(orders, dtype=np.float64)
        q1, q3 = noise.icdf(np.array([0.25, 0.75]))
        self.scale = float(q3 - q1) / 1.349  # a Gaussian's sigma would give its own value
        lo = _RENYI_T[0] * self.scale / math.sqrt(self.dim)
        count = math.ceil(math.log(_RENYI_T[1] * self.scale / lo) / math.log(_RENYI_RATIO)) + 1
        self.t = lo * _RENYI_RATIO ** np.arange(count)
        # Each row is made nondecreasing: a running maximum of upper bounds of a
        # nondecreasing function still bounds it.
        self.g = np.maximum.accumulate(renyi_table(noise, self.orders, self.t, self.scale), axis=1)
        self._hulls: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    def radius(self, p_a, p_b, p: float) -> np.ndarray:
        """Certified l_p radius per (p_A, p_B), the best order; 0 where p_A <= p_B."""
        p_a = np.atleast_1d(np.asarray(p_a, dtype=np.float64))
        p_b = np.atleast_1d(np.asarray(p_b, dtype=np.float64))
        best = np.zeros(p_a.shape)
        for i, order in enumerate(self.orders):
            level = renyi_threshold(order, p_a, p_b)
            level = np.where(p_a > p_b, np.nan_to_num(level, nan=0.0), 0.0)
            # p > 8: the l_p ball lies in the l_inf ball of the same radius (and t^p would
            # leave float64's range on the shift grid).
            r = self._linf(i, level) if p > 8 else self._lp(i, level, p)
            best = np.maximum(best, r)
        return best

    def _linf(self, i: int, level: np.ndarray) -> np.ndarray:
        """sup over the l_inf ball of radius t_m is exactly d g(t_m) (g nondecreasing)."""
        m = np.searchsorted(self.dim * self.g[i], level, side="left") - 1  # d G_m < level
        return np.where(m >= 0, self.t[np.clip(m, 0, None)], 0.0)

    def _lp(self, i: int, level: np.ndarray, p: float) -> np.ndarray:
        """Largest r with d h_(m+1)(r^p / d) < level, on the tangent of h_(m+1) at t_m."""
        value, slope = self._hull(i, p)
        u, d = self.t**p, self.dim
        m = np.searchsorted(d * value, level, side="left") - 1
        k = np.clip(m, 0, None)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ext = np.where(slope[k] > 0, u[k] + (level - d * value[k]) / slope[k], np.inf)
        up = np.minimum(ext, u[k + 1])
        first = np.where(d * self.g[i][0] < level, self.t[0], 0.0)  # (0, t_0] alone
        return np.where(m >= 0, up ** (1.0 / p), first)

    def _hull(self, i: int, p: float) -> tuple[np.ndarray, np.ndarray]:
        """For each m: h_(m+1)(u_m / d) and its right slope there, h_(m+1) the least concave
        majorant of the points (0, G_0), (u_j, G_(j+1)) for j <= m (monotone chain)."""
        if (i, p) in self._hulls:
            return self._hulls[(i, p)]
        g, u, d = self.g[i], self.t**p, self.dim
        value, slope = np.full(len(u) - 1, math.inf), np.zeros(len(u) - 1)
        xs, ys = [0.0], [float(g[0])]
        for m in range(int(np.sum(np.isfinite(g))) - 1):
            x, y = float(u[m]), float(g[m + 1])
            # Pop the last vertex while it lies on or below the chord to the new point.
            while len(xs) > 1 and (ys[-1] - ys[-2]) * (x - xs[-2]) <= (y - ys[-2]) * (
                xs[-1] - xs[-2]
            ):
                xs.pop()
                ys.pop()
            xs.append(x)
            ys.append(y)
            q = x / d
            j = bisect.bisect_right(xs, q) - 1
            if j >= len(xs) - 1:  # beyond the last point (d = 1): the bound there is flat
                value[m] = y
            else:
                slope[m] = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
                value[m] = ys[j] + slope[m] * (q - xs[j])
        self._hulls[(i, p)] = (np.maximum.accumulate(value), slope)
        return self._hulls[(i, p)]


def _equivalence(dim: int, q: float, p: float) -> float:
    """C with ||delta||_q <= C ||delta||_p in R^d, so that R_p >= R_q / C."""

    def inv(r: float) -> float:
        return 0.0 if math.isinf(r) else 1.0 / r

    return max(1.0, dim ** (inv(q) - inv(p)))


class ProvenRadius:
    """Sound lower bounds of the certified l_p radius over all directions, for one (noise, d).

    `notes` maps each bound that does not apply to the reason (e.g. infinite Fisher
    information); `radii` returns the best applicable bound per sample and its name.
    """

    def __init__(self, noise: Noise, dim: int) -> None:
        self.noise, self.dim = noise, int(dim)
        self.notes: dict[str, str] = {}
        self.line_g: LineG | None = None
        self.line_g2: LineG | None = None
        self.c, self.c3, self.fisher = math.inf, math.inf, math.inf
        self.renyi: RenyiBound | None = None
        if noise.is_gaussian or noise.name == "uniform":
            return  # closed forms, exact (uniform: every shift has an infinite divergence)
        try:
            self.renyi = RenyiBound(noise, dim)
        except BoundUnavailable as err:
            self.notes["renyi-divergence"] = f"renyi-divergence unavailable: {err}"
        try:
            law = ScoreLaw(noise)
        except BoundUnavailable as err:
            self.notes["differential"] = f"differential method unavailable: {err}"
            return
        self.line_g = LineG.from_law(law)
        self.c = gaussian_domination_constant(law)
        if not math.isfinite(self.c):
            self.notes["gaussian-domination"] = (
                "gaussian domination unavailable: the score is unbounded inside the support "
                "(not sub-Gaussian)"
            )
        elif law.tail_unbounded and not _subgaussian_score_tail(noise, self.c):
            self.c = math.inf
            self.notes["gaussian-domination"] = (
                "gaussian domination unavailable: the score is unbounded in the tails and not "
                "known to be sub-Gaussian there (the grid cannot check beyond log-odds 690)"
            )
        self.fisher = law.fisher()
        if not math.isfinite(self.fisher):
            self.notes["fisher-arcsin"] = "fisher-arcsin unavailable: infinite Fisher information"
        self.line_g2 = self._cubic_route(noise, law)

    def _cubic_route(self, noise: Noise, law: ScoreLaw) -> LineG | None:
        """The l2 rate as the pointwise least of the cubic-order, Gaussian-domination and
        Fisher lines (each an upper bound of sup_v Phi_v); None where the cubic order fails."""
        if not noise.symmetric:
            self.notes["cubic-domination"] = "cubic-domination unavailable: asymmetric density"
            return None
        if law.interior_unbounded:
            self.notes["cubic-domination"] = (
                "cubic-domination unavailable: the score is unbounded inside the support"
            )
            return None
        tail = None
        if law.tail_unbounded:
            if not _square_tail_known(noise, self.fisher):
                self.notes["cubic-domination"] = (
                    "cubic-domination unavailable: the score is unbounded in the tails and s^2 "
                    "is not known to be lighter-tailed than c^2 Z^2 beyond the grid"
                )
                return None
            tail = law.tail_s2()
        self.c3 = cubic.cubic_domination_constant(law.lo, law.hi, law.m, law.w, tail)
        if not math.isfinite(self.c3):
            self.notes["cubic-domination"] = (
                "cubic-domination unavailable: s^2 is not below c^2 Z^2 in the increasing convex "
                "order for any c up to 1000 sqrt(I)"
            )
            return None
        pools = [cubic.cubic_lines(self.c3)]
        if math.isfinite(self.c):
            pools.append(cubic.gaussian_lines(self.c))
        if math.isfinite(self.fisher):
            pools.append(cubic.fisher_lines(self.fisher))
        return LineG(np.concatenate([t for t, _ in pools]), np.concatenate([e for _, e in pools]))

    def _primary(self, p_a, p_b) -> tuple[dict[float, tuple], dict[float, tuple]]:
        """Candidate bounds per base norm (1 and 2): {q: [(name, values), ...]}."""
        n = self.noise
        zero = np.zeros_like(p_a)
        cands: dict[float, list] = {1.0: [], 2.0: []}
        with np.errstate(divide="ignore", invalid="ignore"):
            if n.is_gaussian:
                l2 = 0.5 * n.sigma * (ndtri(p_a) - ndtri(p_b))
                cands[2.0].append(("cohen-gaussian", l2))
            elif n.name == "uniform":
                delta = p_a - p_b  # the cube overlap must stay above 1 - delta / 2
                cands[1.0].append(("uniform-cube-overlap", n.alpha * delta))
                per = -np.expm1(np.log1p(-delta / 2) / self.dim)
                cands[2.0].append(("uniform-cube-overlap", 2 * n.alpha * per * self.dim**0.5))
            else:
                if self.line_g is not None:
                    g = 0.5 * (self.line_g.G(p_a) - self.line_g.G(p_b))
                    cands[1.0].append(("differential-l1", g))
                if n.name == "laplace":
                    teng = np.maximum(
                        0.5 * n.alpha * np.log(p_a / p_b), -n.alpha * np.log1p(-(p_a - p_b))
                    )
                    cands[1.0].append(("teng-laplace-l1", teng))
                if n.name == "pareto":
                    # Yang et al.'s differential bound in closed form (binary in p_A; a smaller
                    # p_B only helps): our tabulated G is ~5e-4 below it.
                    yang = np.vectorize(closed_forms.yang_pareto_l1)(n.alpha, n.beta, p_a)
                    cands[1.0].append(("yang-pareto-l1", yang))
                if math.isfinite(self.c):
                    cands[2.0].append(
                        ("gaussian-domination", (ndtri(p_a) - ndtri(p_b)) / (2 * self.c))
                    )
                if self.line_g2 is not None:
                    g2 = 0.5 * (self.line_g2.G(p_a) - self.line_g2.G(p_b))
                    cands[2.0].append(("cubic-domination", g2))
                if math.isfinite(self.fisher):
                    arc = np.arcsin(2 * p_a - 1) - np.arcsin(2 * p_b - 1)
                    cands[2.0].append(("fisher-arcsin", arc / (2 * math.sqrt(self.fisher))))
                if self.renyi is not None:
                    for q in (1.0, 2.0):
                        cands[q].append(("renyi-divergence", self.renyi.radius(p_a, p_b, q)))
        return {
            q: [(name, np.where(p_a > p_b, np.nan_to_num(v, nan=0.0), zero)) for name, v in c]
            for q, c in cands.items()
        }

    def radii(self, p_a, p_b, norms) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """{p: (radius, name of the bound per sample)}, margin taken off; 0 where p_A <= p_B."""
        p_a = np.atleast_1d(np.asarray(p_a, dtype=np.float64))
        p_b = np.atleast_1d(np.asarray(p_b, dtype=np.float64))
        cands = self._primary(p_a, p_b)
        best = {}
        for q, c in cands.items():
            vals = np.stack([v for _, v in c]) if c else np.zeros((1,) + p_a.shape)
            names = np.array([name for name, _ in c] or ["none"], dtype=object)
            i = np.argmax(vals, axis=0)
            best[q] = (vals[i, np.arange(p_a.size)], names[i])
        # l1 and l2 improve each other through norm equivalence, then every p follows.
        r1, n1 = best[1.0]
        r2, n2 = best[2.0]
        up1 = r2 > r1
        r1, n1 = np.where(up1, r2, r1), np.where(up1, n2 + " (l2->l1)", n1)
        from_1 = r1 / math.sqrt(self.dim)
        up2 = from_1 > r2
        r2, n2 = np.where(up2, from_1, r2), np.where(up2, n1 + " (l1->l2)", n2)
        out = {}
        for p in norms:
            c1, c2 = r1 / _equivalence(self.dim, 1.0, p), r2 / _equivalence(self.dim, 2.0, p)
            use1 = c1 >= c2
            r = np.where(use1, c1, c2)
            name = np.where(use1, n1, n2)
            if p not in (1.0, 2.0):
                name = np.array([s + f" (norm equivalence to l{p:g})" for s in name], dtype=object)
                if self.renyi is not None:  # l_inf and other p: Li et al.'s bound directly
                    direct = self.renyi.radius(p_a, p_b, p)
                    up = direct > r
                    r, name = np.where(up, direct, r), np.where(up, "renyi-divergence", name)
            # Closed forms are exact in float64; computed bounds lose the numerical margin.
            exact = np.array([s.split(" ")[0] in CLOSED_FORMS for s in name], dtype=bool)
            out[p] = (np.where(exact, r, r * (1 - BOUND_MARGIN)), name)
        return out

    def bound_names(self, norms) -> dict[float, str]:
        """The bound(s) each norm's radius comes from, at the typical p_A values 0.6-0.99."""
        grid = np.array([0.6, 0.8, 0.9, 0.99])
        found = self.radii(grid, 1 - grid, norms)
        names = {p: " | ".join(sorted(set(found[p][1]))) for p in norms}
        if self.notes:
            for p in names:
                names[p] += " [" + "; ".join(self.notes.values()) + "]"
        return names


BOUNDS_VERSION = "bounds-3"  # bump when a bound's numerics change: it invalidates cached curves
# Keyed by the law's content hash (never id(noise), which Python reuses after a free), and
# bounded like the engines, so that C-OPT / I-OPT loops over many noises stay flat in memory.
_PROVEN = BoundedLRU(max_items=32, max_bytes=64 * 2**20)


class ScaledProvenRadius:
    """The ProvenRadius of the alpha = 1 law, answering for scale `alpha`: every bound above
    is linear in the scale (the score scales as 1/alpha, the Fisher information as 1/alpha^2,
    a Renyi divergence of a shift delta is that of delta / alpha), so R(alpha X) = alpha R(X).
    """

    def __init__(self, unit: ProvenRadius, alpha: float) -> None:
        self.unit, self.alpha = unit, float(alpha)
        self.dim, self.notes = unit.dim, unit.notes

    def radii(self, p_a, p_b, norms) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """As `ProvenRadius.radii`, times alpha."""
        found = self.unit.radii(p_a, p_b, norms)
        with np.errstate(over="ignore"):  # a bound near the float maximum (p_A = 1) -> inf
            return {p: (self.alpha * r, name) for p, (r, name) in found.items()}

    def bound_names(self, norms) -> dict[float, str]:
        """As `ProvenRadius.bound_names` (names do not depend on the scale)."""
        return self.unit.bound_names(norms)


def proven_radius(noise: Noise, dim: int) -> ScaledProvenRadius:
    """A cached ProvenRadius per (law at alpha = 1, d), scaled to the noise's alpha: the score
    law costs ~1 s to tabulate, and a sweep over sigma needs it once."""
    unit = noise.with_alpha(1.0)
    key = (unit.identity(), int(dim))
    base = _PROVEN.get_or_create(key, lambda: ProvenRadius(unit, dim))
    return ScaledProvenRadius(base, noise.alpha)


TIGHT_RTOL = 2e-3  # proven within this of the family value: `tight` (the family is exact there)


def proven_results(
    noise: Noise, p_a: float, p_b: float, norms, dim: int, family: dict[float, float]
) -> dict[float, tuple[float, str, bool]]:
    """{p: (proven radius, bound name, tight)} for one (p_A, p_B), capped by `family`."""
    if p_a <= p_b:
        return {p: (0.0, "abstain (p_A <= p_B)", True) for p in norms}
    found = proven_radius(noise, dim).radii([p_a], [p_b], norms)
    out = {}
    for p in norms:
        r, name = float(found[p][0][0]), str(found[p][1][0])
        if name.startswith("none"):
            pr = proven_radius(noise, dim)
            name = "none: " + ("; ".join(pr.notes.values()) or "no bound applies")
        fam = family[p]
        tight = name.split(" ")[0] in EXACT_BOUNDS or r >= fam * (1 - TIGHT_RTOL)
        out[p] = (min(r, fam), name, bool(tight))
    return out


def proven_curve(
    noise: Noise, dim: int, p_grid: np.ndarray, family: dict[float, np.ndarray]
) -> dict[float, np.ndarray]:
    """Binary proven radius on p_grid for each norm of `family`, capped by the family curve
    (R is non-decreasing in p_A for both, so a look-up at the grid point below stays sound)."""
    found = proven_radius(noise, dim).radii(p_grid, 1 - p_grid, list(family))
    return {p: np.minimum(found[p][0], family[p]) for p in family}
