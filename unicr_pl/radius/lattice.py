"""High-precision law of the log likelihood ratio for structured perturbations, without Monte Carlo.

For delta = (a, ..., a, 0, ..., 0) with k non-zero coordinates and iid noise, L is the sum of k
iid copies of the one-dimensional Z_a = log mu(eps - a) - log mu(eps), eps ~ mu. We
  1. tabulate Z_a by quadrature: eps on 2^17 cells equally spaced in log-odds over
     [-40, 40] (tails below 4e-18 are dropped), the midpoint of each cell carrying its exact mass;
     near the median the cells shrink geometrically towards it (1024 per e-fold of |t|, down
     to |t| = 1e-9), so that a cusp of the density at 0 (generalised normal with beta <= 1,
     Laplace) and the moved cusp at a are resolved at any scale of a: the cells around them
     are ~a/1024 wide. With equal cells only, a shift a of a few cell widths (large k, e.g.
     d = 3072 with beta = 0.5) left Z_a under-resolved and the radius off by up to +2.7%
     (2^15 cells) or -5e-4 (2^17); graded, the moments of Z_a agree with an independent
     quadrature to ~1e-5 and a*(k) moves by < 7e-5 from 2^17 to 2^19 cells;
  2. put Z_a on a lattice of 16 points per standard deviation, each value split between its
     two neighbouring points so that it keeps its mean (rounding to the nearest point moved
     Laplace's two atoms by alignment-dependent amounts: up to +1.3e-4 in the radius; split,
     the radius agrees with an atom-exact oracle to 5e-5 and with a 32x finer lattice to
     3e-5), then shift and rescale the lattice so that the mean and variance of L are those
     of the tabulated law exactly;
  3. form the k-fold sum by FFT (the characteristic function raised to the power k), on a
     window of +-10 standard deviations around the means of L under X and under Y.
Values of Z_a equal to -inf (e.g. uniform noise, where eps - a leaves the support) are kept out
of the lattice: their mass is carried as an atom of L at -inf, as it should be. The two cells
around the point where eps - a leaves the support are split into 64 sub-cells first, so that
this atom is right to 1/64 of a cell. For k = 1 (`single_law`) no lattice is needed.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.fft import next_fast_len
from scipy.special import expit

from unicr_pl.noises import Noise

_CELLS = 1 << 17
_T_MAX = 40.0
_STD_WINDOW = 10.0
_Z_PER_STD = 16  # lattice points per standard deviation of one Z (before the variance fix)
_MIN_POINTS, _MAX_POINTS = 1 << 12, 1 << 20
_GRADED_PER_EFOLD = 1024  # graded cells per e-fold of |t|: equal to the uniform width at the join
_SPLIT = 64  # sub-cells of a cell inside which eps - a leaves the support
_T_MIN = 1e-9  # innermost graded edge (|t|); [-_T_MIN, 0] and [0, _T_MIN] hold ~2.5e-10 each


def log_odds_edges(cells: int) -> np.ndarray:
    """Cell edges in log-odds: `cells` equal cells over [-40, 40], the 2 * 1024 of them around
    t = 0 replaced by cells shrinking geometrically towards 0 (0 itself is an edge)."""
    if cells % 2 or cells < 4 * _GRADED_PER_EFOLD:
        raise ValueError(f"cells must be even and >= {4 * _GRADED_PER_EFOLD}, got {cells}")
    uniform = np.linspace(-_T_MAX, _T_MAX, cells + 1)
    mid, m = cells // 2, _GRADED_PER_EFOLD
    t_g = uniform[mid + m]  # the join: m uniform cells from 0
    graded = t_g * np.exp(-np.arange(math.ceil(m * math.log(t_g / _T_MIN)) + 1) / m)
    return np.concatenate(
        [uniform[: mid - m], -graded, [0.0], graded[::-1], uniform[mid + m + 1 :]]
    )


# Tables reuse scratch buffers between calls; one lock for all of them keeps a table shared
# between threads (the engines are cached per noise) correct. Not per table: a lock would not
# pickle.
_SCRATCH_LOCK = threading.Lock()


def _support_edge_cells(finite: np.ndarray) -> np.ndarray:
    """Indices of the cells on either side of a change between finite and -inf Z_a (where
    eps - a leaves the support between two midpoints)."""
    edge = np.flatnonzero(finite[:-1] != finite[1:])
    return np.union1d(edge, edge + 1)


def _holds_scratch_lock(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _SCRATCH_LOCK:
            return method(*args, **kwargs)

    return locked


def _dot(w: np.ndarray, x: np.ndarray) -> float:
    """sum(w * x) without BLAS: BLAS threads left spinning after a dot slow torch's own
    threads (log_prob) down by 2-10x on a 2-core machine."""
    return float(np.einsum("i,i->", w, x))


def _centred_moment(w: np.ndarray, x: np.ndarray, mean: float, scratch: np.ndarray) -> float:
    """sum(w * (x - mean)^2), through `scratch` (same size as x) instead of new arrays."""
    np.subtract(x, mean, out=scratch)
    np.multiply(scratch, scratch, out=scratch)
    return _dot(w, scratch)


def _histograms(
    idx: np.ndarray, weights: tuple[np.ndarray, ...], points: int, neq: np.ndarray
) -> list[np.ndarray]:
    """np.bincount(idx, w, minlength=points) for each w, 5x faster here: Z_a is continuous in
    eps, so neighbouring cells mostly share a lattice point; each run of equal indices is
    summed in order by reduceat (no cancellation), then the few thousand runs are binned."""
    np.not_equal(idx[1:], idx[:-1], out=neq)
    starts = np.flatnonzero(neq)
    starts += 1
    starts = np.concatenate([[0], starts])
    at = idx[starts]
    return [np.bincount(at, np.add.reduceat(w, starts), minlength=points) for w in weights]


# |spec|^k below this is dropped from the k-fold convolution: it moves no lattice mass by more
# than this, far below the FFT's own round-off (~1e-17).
_SPEC_FLOOR = 1e-25


def _spectral_power(spec: np.ndarray, k: int) -> np.ndarray:
    """spec ** k, computed only where it is not negligible. Complex pow costs ~15 ns a
    point; at large k the characteristic function of the sum is ~0 beyond the lowest few
    hundred frequencies of the lattice's tens of thousands."""
    if k <= 4:
        out = spec.copy()
        for _ in range(k - 1):
            out *= spec
        return out
    keep = np.abs(spec) > _SPEC_FLOOR ** (1.0 / k)
    out = np.zeros_like(spec)
    out[keep] = spec[keep] ** k
    return out


@dataclass
class LatticeLaw:
    """A law of L on a lattice: masses at `start + step * j`, plus an atom at -inf."""

    start: float
    step: float
    mass: np.ndarray  # [N] float64
    mass_neg_inf: float

    def values_and_mass(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ascending values (first one -inf) and masses, as float64 tensors."""
        vals = self.start + self.step * np.arange(self.mass.size, dtype=np.float64)
        vals = np.concatenate([[-np.inf], vals])
        mass = np.concatenate([[self.mass_neg_inf], self.mass])
        return torch.from_numpy(vals), torch.from_numpy(mass)


class _OneZ(NamedTuple):
    """The tabulated law of one Z_a under X: its finite values and their cell masses (scratch
    views, valid until the next law), the mass at Z = -inf, mean, variance and bounds."""

    z: np.ndarray
    w: np.ndarray
    lost: float
    mean: float
    var: float
    z_min: float
    z_max: float


class _Window(NamedTuple):
    """The lattice of L (lo + j * step, j < points) and the range one Z is kept in."""

    lo: float
    step: float
    points: int
    z_lo: float
    z_hi: float


class StructuredLogRatio:
    """Tabulated one-dimensional Z_a for a noise, and the law of k-fold sums.

    Build once per noise; the eps-cells and log mu(eps) are reused for every shift a.
    """

    def __init__(self, noise: Noise, cells: int = _CELLS) -> None:
        self.noise = noise
        edges = log_odds_edges(cells)
        # Cell masses from the logistic CDF, differenced on the side that keeps precision.
        lo, hi = edges[:-1], edges[1:]
        self.cell_mass = np.where(hi <= 0, expit(hi) - expit(lo), expit(-lo) - expit(-hi))
        self._mass_total = float(self.cell_mass.sum())
        self.eps = noise.quantile_logodds(0.5 * (lo + hi))  # [cells] midpoints in log-odds
        self._eps_t = torch.from_numpy(self.eps)
        self.base = noise.log_prob(self._eps_t).numpy()
        self._t_edges = edges  # [cells + 1], for the cells single_law splits
        # Scratch buffers rewritten by every law (under _SCRATCH_LOCK): nothing cell-sized
        # is allocated per call, see Noise.log_prob_ for why.
        n = self.eps.size
        self._z = np.empty(n)
        self._tmp, self._tmp2, self._idx = np.empty(n), np.empty(n), np.empty(n, dtype=np.int64)
        self._neq = np.empty(n - 1, dtype=bool)

    def _log_ratio_into(
        self, out: np.ndarray, points: torch.Tensor, base: np.ndarray, a: float
    ) -> np.ndarray:
        """out = log mu(points - a) - base, written in place (NaN or -inf where points - a
        leaves the support)."""
        out_t = torch.from_numpy(out)
        torch.sub(points, a, out=out_t)
        self.noise.log_prob_(out_t)
        return np.subtract(out, base, out=out)

    @_holds_scratch_lock
    def z_values(self, a: float) -> np.ndarray:
        """Z_a at the cell midpoints (a new float64 array, -inf where eps - a leaves the
        support)."""
        z = self._log_ratio_into(self._z, self._eps_t, self.base, a).copy()
        z[np.isnan(z)] = -np.inf
        return z

    @_holds_scratch_lock
    def single_law(self, a: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Law of Z_a itself (k = 1), without a lattice: each cell's mass at Z_a of its midpoint,
        second-order accurate where Z_a is continuous (Cohen's and Teng's radii to 5e-6).

        The two cells around a point where eps - a leaves the support (uniform noise: Z_a jumps
        from 0 to -inf) are split into _SPLIT sub-cells, each at the smaller Z_a of its two
        edges: at its midpoint alone such a cell put its whole mass on one side of the edge
        (up to +2.4e-4 of the radius). The smaller edge of every cell, the earlier rule, was a
        first-order error: 2e-4 to 5e-4 of the radius below the closed forms.
        """
        z = self._log_ratio_into(self._z, self._eps_t, self.base, a)
        z[np.isnan(z)] = -np.inf
        values, mass = z, self.cell_mass  # the scratch, or a new array below: written in place
        rough = _support_edge_cells(np.isfinite(z)) if np.isneginf(z.min()) else ()
        if len(rough):
            sub_values, sub_mass = self._split_cells(rough, a)
            keep = np.ones(z.size, dtype=bool)
            keep[rough] = False
            values = np.concatenate([z[keep], sub_values])
            mass = np.concatenate([mass[keep], sub_mass])
        # Rounded down to multiples of 2^-40: round-off jitter where Z is flat in theory
        # (Laplace tails: Z = a exactly) otherwise breaks the monotone runs that make the
        # sort fast (1.7 ms -> 0.1 ms); lowering L by < 1e-12 only shrinks the radius.
        np.multiply(values, 2.0**40, out=values)
        np.floor(values, out=values)
        np.multiply(values, 2.0**-40, out=values)
        order = np.argsort(values, kind="stable")
        return torch.from_numpy(values[order]), torch.from_numpy(mass[order])

    def _split_cells(self, cells: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
        """Z_a and mass of _SPLIT equal log-odds sub-cells of each given cell, each at the
        smaller Z_a of its edges (-inf where eps - a leaves the support at either)."""
        lo, hi = self._t_edges[cells], self._t_edges[cells + 1]
        t = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, _SPLIT + 1)  # [c, S + 1]
        eps = torch.from_numpy(self.noise.quantile_logodds(t))
        z = (self.noise.log_prob(eps - a) - self.noise.log_prob(eps)).numpy()
        z[np.isnan(z)] = -np.inf
        t_lo, t_hi = t[:, :-1], t[:, 1:]
        mass = np.where(t_hi <= 0, expit(t_hi) - expit(t_lo), expit(-t_lo) - expit(-t_hi))
        return np.minimum(z[:, :-1], z[:, 1:]).ravel(), mass.ravel()

    @_holds_scratch_lock
    def law(self, a: float, k: int) -> LatticeLaw:
        """Law of L for k coordinates shifted by a (the others unperturbed contribute 0)."""
        # One radius evaluates 35-100 laws on 2^17+ cells each: few passes, none allocating
        # in the common case (every Z finite, nothing cut). The steps below share the scratch
        # buffers, hence the one lock around all of them.
        one = self._finite_z(a)
        if one is None:  # eps - a leaves the support for every eps: L = -inf surely
            return LatticeLaw(0.0, 1.0, np.zeros(1), 1.0)
        mean_y, var_y = self._y_moments(one)  # the window must hold L under Y too
        win = self._window(one, mean_y, var_y, k)
        one = self._cut_beyond_reach(one, win)
        pmf_first, first = self._split_onto_lattice(one, win, k)
        start, step = self._match_moments(pmf_first, first, one, win, k)
        pmf, finite_mass = self._k_fold(np.roll(pmf_first, first), k, one.lost)
        return LatticeLaw(start, step, pmf, 1.0 - finite_mass)

    def _finite_z(self, a: float) -> _OneZ | None:
        """Z_a at the cell midpoints, its finite values only, with their X-mean, X-variance,
        bounds and the mass of Z = -inf (None if Z = -inf everywhere). Caller holds the lock."""
        z = self._log_ratio_into(self._z, self._eps_t, self.base, a)
        w, total, lost = self.cell_mass, self._mass_total, 0.0
        # The first moment doubles as the test for -inf values: no isfinite pass when none.
        s1 = _dot(w, z)
        if not math.isfinite(s1):  # some Z = -inf: eps - a left the support
            finite = np.isfinite(z)
            lost = float(w[~finite].sum())  # P(Z = -inf): an atom of L at -inf
            rough = _support_edge_cells(finite)
            if rough.size:  # split as in single_law, each cell's finite part at its lowest Z
                sub_z, sub_w = self._split_cells(rough, a)
                sub_z, sub_w = sub_z.reshape(rough.size, _SPLIT), sub_w.reshape(rough.size, -1)
                inside = np.isfinite(sub_z)
                w = w.copy()
                w[rough] = np.where(inside, sub_w, 0.0).sum(axis=1)
                z[rough] = np.where(inside, sub_z, np.inf).min(axis=1)  # inf: none inside
                finite[rough] = w[rough] > 0
                lost = float(w[~finite].sum() + np.where(inside, 0.0, sub_w).sum())
            z, w = z[finite], w[finite]
            total = float(w.sum())
            if total <= 0:
                return None
            s1 = _dot(w, z)
        mean = s1 / total
        var = _centred_moment(w, z, mean, self._tmp[: z.size]) / total
        return _OneZ(z, w, lost, mean, var, float(z.min()), float(z.max()))

    def _y_moments(self, one: _OneZ) -> tuple[float, float]:
        """Mean and variance of Z under Y = eps + a (used only to place the window)."""
        if self.noise.symmetric:
            # Under Y = eps + a, Z = -Z_a(-eps) and -eps ~ eps: the Y-law of Z is the X-law
            # of -Z.
            return -one.mean, one.var
        # Y-weights w e^z: the identity P_Y = E_X[e^L]
        z, w = one.z, one.w
        wy = w * np.exp(np.minimum(z, 700.0))
        mean_y = _dot(wy, z) / float(wy.sum())
        var_y = _centred_moment(wy, z, mean_y, self._tmp[: z.size]) / float(wy.sum())
        return mean_y, var_y

    @staticmethod
    def _window(one: _OneZ, mean_y: float, var_y: float, k: int) -> _Window:
        """The lattice of L, and the range [z_lo, z_hi] in which one Z is kept."""
        std_z = math.sqrt(max(one.var, var_y))
        if std_z == 0.0:  # Z is an atom (e.g. uniform noise inside the overlap: Z = 0)
            std_z = 1e-12
        mean_x = one.mean
        # Window of the sum: +-10 std of L around the means, widened by `reach`, the farthest
        # one Z is kept from its means. One Z anywhere in its kept range plus the other k - 1
        # within 10 std of L still fits, as do two extreme Z with the rest near their mean when
        # k >= 16 (then reach = 10 std of L), so the circular FFT does not wrap them around.
        # (A fixed +-40 std of one Z was too narrow for bounded but spiky laws: beta = 0.5 at
        # tiny a sent 1.5% of L to -inf.) No further than the farthest finite Z actually lies
        # (Gaussian tails stop at ~9 std).
        s = math.sqrt(k) * std_z
        farthest = max(max(mean_x, mean_y) - one.z_min, one.z_max - min(mean_x, mean_y))
        reach = min(max(40.0, _STD_WINDOW * math.sqrt(k)) * std_z, farthest)
        lo = k * min(mean_x, mean_y) - _STD_WINDOW * s - reach
        hi = k * max(mean_x, mean_y) + _STD_WINDOW * s + reach
        points = int(min(_MAX_POINTS, max(_MIN_POINTS, (hi - lo) / std_z * _Z_PER_STD)))
        points = next_fast_len(points, real=True)  # any size with small factors: no need for 2^n
        step = (hi - lo) / points
        return _Window(lo, step, points, min(mean_x, mean_y) - reach, max(mean_x, mean_y) + reach)

    def _cut_beyond_reach(self, one: _OneZ, win: _Window) -> _OneZ:
        """Values beyond the window's reach cut: below to -inf (lowers L), above down to the
        cap (lowers L), so a cut can only shrink the radius. Moments and bounds re-measured
        on what is kept; `one` itself where nothing is cut (the common case)."""
        if not (one.z_min < win.z_lo or one.z_max > win.z_hi):
            return one
        z, w = one.z, one.w
        keep = z >= win.z_lo
        lost = one.lost + float(w[~keep].sum())
        z, w = np.minimum(z[keep], win.z_hi), w[keep]
        mean = _dot(w, z) / float(w.sum())
        var = _centred_moment(w, z, mean, self._tmp[: z.size]) / float(w.sum())
        z_min, z_max = max(one.z_min, win.z_lo), min(one.z_max, win.z_hi)  # of the kept values
        return _OneZ(z, w, lost, mean, var, z_min, z_max)

    def _split_onto_lattice(self, one: _OneZ, win: _Window, k: int) -> tuple[np.ndarray, int]:
        """Law of one Z on the lattice: masses [points] at lattice indices first, first + 1, ...
        (mod points), and `first`.

        Each Z is split between its two neighbouring lattice points with weights that keep its
        value on average (linear, "cloud in cell"). Rounding to the nearest point instead moves
        a value by a residual that depends on the value itself: Laplace-like laws, whose Z sits
        mostly on two atoms, then had the shape of L distorted, and the radius off by up to
        +-1.3e-4 depending on how the atoms met the lattice.
        """
        z, w = one.z, one.w
        # x = (z - lo / k) / step, relative to lo / k so that k indices sum to S's index; its
        # floor, counted from the first one (floor is monotone, so the bounds of z give the
        # range, narrower than the window), indexes the lower point.
        inv, shift = 1.0 / win.step, -win.lo / k / win.step
        first = math.floor(one.z_min * inv + shift)
        if math.floor(one.z_max * inv + shift) + 1 - first >= win.points:  # the window forbids
            raise RuntimeError("lattice window narrower than the law of one Z")
        x, lower = self._tmp[: z.size], self._tmp2[: z.size]
        np.multiply(z, inv, out=x)
        np.add(x, shift, out=x)
        np.floor(x, out=lower)
        idx = self._idx[: z.size]
        np.copyto(idx, lower, casting="unsafe")
        np.subtract(idx, first, out=idx)
        np.subtract(x, lower, out=x)  # fraction of the way to the upper point
        np.multiply(x, w, out=x)  # mass moved up
        np.subtract(w, x, out=lower)  # mass kept down
        down, up = _histograms(idx, (lower, x), win.points, self._neq[: z.size - 1])
        return down + np.roll(up, 1), first

    @staticmethod
    def _match_moments(
        pmf_first: np.ndarray, first: int, one: _OneZ, win: _Window, k: int
    ) -> tuple[float, float]:
        """(start, step) of the lattice of L, shifted and rescaled about its mean so that L has
        the exact mean and variance of the tabulated law.

        The split keeps the mean of one Z up to round-off and adds up to step^2/4 to its
        variance; k copies add both up. Measured on the lattice law of one Z, corrected for L.
        """
        points, lo, step = win.points, win.lo, win.step
        m = np.arange(points, dtype=np.float64)
        w_sum = float(pmf_first.sum())
        m_mean = _dot(pmf_first, m) / w_sum
        mean_r = lo / k + step * (first + m_mean)
        var_r = step * step * _centred_moment(pmf_first, m, m_mean, np.empty(points)) / w_sum
        shrink = math.sqrt(one.var / var_r) if var_r > 0 else 1.0
        # Lattice point j sits at lo + j * step with the lattice law's mean k * mean_r; map it
        # to k * mean + shrink * (lo + j * step - k * mean_r).
        return k * one.mean + shrink * (lo - k * mean_r), shrink * step

    @staticmethod
    def _k_fold(pmf_z: np.ndarray, k: int, lost: float) -> tuple[np.ndarray, float]:
        """Law of the sum of k copies of one Z (lattice law `pmf_z`, indexed mod its size;
        mass `lost` at -inf): the lattice masses, and their total P(L > -inf)."""
        if k == 1:
            pmf = pmf_z
        else:  # circular convolution: the window keeps the sum from wrapping around
            pmf = np.fft.irfft(_spectral_power(np.fft.rfft(pmf_z), k), n=pmf_z.size)
        pmf = np.clip(pmf, 0.0, None)  # FFT round-off (~1e-17) must not create negative mass
        finite_mass = (1.0 - lost) ** k
        pmf *= finite_mass / max(pmf.sum(), 1e-300)
        return pmf, finite_mass
