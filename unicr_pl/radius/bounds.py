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
  Phi* <= sqrt(I q (1 - q)) (Cauchy-Schwarz, I the Fisher information);
- norm equivalence between l1, l2 and l_inf.

Every numerically computed bound loses a relative `BOUND_MARGIN`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import integrate
from scipy.special import erfcx, expit, ndtri

from unicr_pl.noises import Noise

BOUND_MARGIN = 1e-4  # relative, off every numerically computed bound (quadrature, grids)
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
        cdf = expit(t)
        w = np.concatenate([[expit(t[0])], np.diff(cdf), [expit(-t[-1])]])
        mid = 0.5 * (x[1:] + x[:-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp, s = _score(noise, x)
            lp_mid, s_mid = _score(noise, mid)
        top = float(np.max(lp[np.isfinite(lp)]))
        dens, dens_mid = np.exp(lp - top), np.exp(lp_mid - top)
        # Normalisation by Simpson's rule on the cells, checked against the quantiles' masses.
        simpson = np.diff(x) / 6 * (dens[:-1] + 4 * dens_mid + dens[1:])
        z = simpson.sum() / (cdf[-1] - cdf[0])
        central = w[1:-1] > 1e-4
        err = np.max(np.abs(simpson[central] / z / w[1:-1][central] - 1))
        if not (np.isfinite(z) and err < 1e-3):
            raise BoundUnavailable(f"the density does not match its quantiles (error {err:.1e})")
        f = dens / z
        self._top, self._z = top, float(z)
        if max(f[0], f[-1]) > 1e-12 * f.max():
            raise BoundUnavailable("the density does not vanish at its support ends (no score)")
        self.z_error = float(abs(simpson.sum() / z - (cdf[-1] - cdf[0])))
        self.f_max = float(f.max())
        m = np.concatenate([[-f[0]], f[:-1] - f[1:], [f[-1]]])
        lo, hi = self._cell_ranges(s, s_mid, m, w)
        self.lo, self.hi, self.m, self.w = lo, hi, m, w
        self.interior_unbounded = bool(np.any(~np.isfinite(hi[1:-1])))
        self.tail_unbounded = bool(not np.isfinite(hi[0]) or not np.isfinite(hi[-1]))
        self._noise = noise
        self._x = x

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
        q = np.quantile(vals, np.linspace(0, 1, _N_T // 2))
        return np.unique(np.concatenate([[0.0], q, np.linspace(0, vals.max(), _N_T // 2)]))

    def fisher(self) -> float:
        """An upper bound of I = E[s(X)^2] (inf where it diverges)."""
        fin = np.isfinite(self.lo) & np.isfinite(self.hi)
        total = float(np.sum(np.maximum(self.lo**2, self.hi**2)[fin] * self.w[fin]))
        for j in np.flatnonzero(~fin):  # unbounded cells: adaptive quadrature of s^2 f
            a = -math.inf if j == 0 else float(self._x[j - 1])
            b = math.inf if j == len(self.w) - 1 else float(self._x[j])
            total += self._quad_s2f(a, b)
        return total * (1 + 1e-6)

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


def _gauss_excess(x: np.ndarray) -> np.ndarray:
    """A lower bound of psi(x) = E(Z - x)_+ = phi(x) - x Q(x), x >= 0, accurate to ~1e-15."""
    x = np.asarray(x, dtype=np.float64)
    phi = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        direct = phi * (1 - x * erfcx(x / math.sqrt(2)) * math.sqrt(math.pi / 2))
        series = phi * (1 / x**2 - 3 / x**4)  # alternating: truncated here, a lower bound
    return np.where(x < 8, direct * (1 - 1e-12), series)


def gaussian_domination_constant(law: ScoreLaw) -> float:
    """The smallest c (on the threshold grid) with E(+-s - t)_+ <= c psi(t / c) for all t >= 0,
    i.e. s <=_cx c Z; inf where the score is unbounded inside the support.

    Between grid points t_j < t_j+1: E(s - t)_+ <= E(s - t_j)_+ and c psi(t / c) >=
    c psi(t_j+1 / c), so checking E(s - t_j)_+ <= c psi(t_j+1 / c) covers every t in between.
    """
    if law.interior_unbounded:
        return math.inf
    t = law.thresholds()
    e = np.maximum(law.excess(t, 1.0), law.excess(t, -1.0))
    e_j, t_next = e[:-1], t[1:]
    need = e_j > 0
    e_j, t_next = e_j[need], t_next[need]
    lo = np.full(e_j.shape, 1e-12 * max(t.max(), 1.0))
    hi = np.full(e_j.shape, 1e12 * max(t.max(), 1.0))
    for _ in range(200):  # bisection in log c: c psi(t / c) is increasing in c
        c = np.sqrt(lo * hi)
        ok = c * _gauss_excess(t_next / c) >= e_j
        hi, lo = np.where(ok, c, hi), np.where(ok, lo, c)
    return float(hi.max()) * (1 + 1e-9)


class LineG:
    """G(p) = int_{1/2}^p dq / Phi*(q) from below, with Phi*(u) <= u t_i + e(t_i) on each
    interval of a grid of u = min(q, 1 - q): integrating 1 / (u t + e) exactly gives a
    pointwise lower bound of the integrand, so differences G(p_A) - G(p_B) are lower bounds.
    """

    def __init__(self, law: ScoreLaw) -> None:
        t = law.thresholds()
        e = np.maximum(law.excess(t, 1.0), law.excess(t, -1.0))
        u = expit(-_U_TAU)  # descending from 1/2
        u_mid = expit(-0.5 * (_U_TAU[1:] + _U_TAU[:-1]))
        pick = np.argmin(u_mid[:, None] * t[None, :] + e[None, :], axis=1)
        self.u, self.t, self.e = u, t[pick], e[pick]
        pieces = self._piece(u[:-1], u[1:])
        self.h = np.concatenate([[0.0], np.cumsum(pieces)])  # H(u_i) = int_{u_i}^{1/2}

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
