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
  2. put Z_a on a lattice of 16 points per standard deviation, then shift and rescale the
     lattice so that the mean and variance of L are those of the tabulated law exactly;
  3. form the k-fold sum by FFT (the characteristic function raised to the power k), on a
     window of +-10 standard deviations around the means of L under X and under Y.
Values of Z_a equal to -inf (e.g. uniform noise, where eps - a leaves the support) are kept out
of the lattice: their mass is carried as an atom of L at -inf, as it should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit

from unicr_pl.noises import Noise

_CELLS = 1 << 17
_T_MAX = 40.0
_STD_WINDOW = 10.0
_Z_PER_STD = 16  # lattice points per standard deviation of one Z (before the variance fix)
_MIN_POINTS, _MAX_POINTS = 1 << 12, 1 << 20
_GRADED_PER_EFOLD = 1024  # graded cells per e-fold of |t|: equal to the uniform width at the join
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


def _dot(w: np.ndarray, x: np.ndarray) -> float:
    """sum(w * x) without BLAS: BLAS threads left spinning after a dot slow torch's own
    threads (log_prob) down by 2-10x on a 2-core machine."""
    return float(np.einsum("i,i->", w, x))


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
        self._edges_t = torch.from_numpy(noise.quantile_logodds(edges))  # [cells + 1]
        self._edges_base = noise.log_prob(self._edges_t).numpy()

    def z_values(self, a: float) -> np.ndarray:
        """Z_a at the cell midpoints (float64, -inf where eps - a leaves the support)."""
        z = self.noise.log_prob(self._eps_t - a).numpy() - self.base
        return np.where(np.isnan(z), -np.inf, z)

    def single_law(self, a: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Law of Z_a itself (k = 1), without a lattice: each cell carries the smaller of Z_a
        at its two edges, a stochastically smaller law (exact where Z_a is monotone on a cell,
        which is every cell but the few around its turning points)."""
        z = self.noise.log_prob(self._edges_t - a).numpy() - self._edges_base
        z = np.where(np.isnan(z), -np.inf, z)
        cell = np.minimum(z[:-1], z[1:])
        order = np.argsort(cell, kind="stable")
        return torch.from_numpy(cell[order]), torch.from_numpy(self.cell_mass[order])

    def law(self, a: float, k: int) -> LatticeLaw:
        """Law of L for k coordinates shifted by a (the others unperturbed contribute 0)."""
        # Every pass below touches 2^17 cells, and one radius evaluates 40-100 laws: few passes
        # (weighted sums for the moments, no copies where nothing is cut).
        z = self.z_values(a)
        w = self.cell_mass
        finite = np.isfinite(z)
        if finite.all():
            zf, wf, lost, total = z, w, 0.0, self._mass_total
        else:
            zf, wf, lost = z[finite], w[finite], float(w[~finite].sum())  # lost: P(Z = -inf)
            total = float(wf.sum())
        if total <= 0:
            return LatticeLaw(0.0, 1.0, np.zeros(1), 1.0)
        mean_x = _dot(wf, zf) / total
        dz = zf - mean_x
        var_x = _dot(wf, dz * dz) / total
        if self.noise.symmetric:
            # Under Y = eps + a, Z = -Z_a(-eps) and -eps ~ eps: the Y-law of Z is the X-law
            # of -Z. (Only the window below uses the Y-moments.)
            mean_y, var_y = -mean_x, var_x
        else:  # Y-weights w e^z: the identity P_Y = E_X[e^L]
            wy = wf * np.exp(np.minimum(zf, 700.0))
            mean_y = _dot(wy, zf) / float(wy.sum())
            dy = zf - mean_y
            var_y = _dot(wy, dy * dy) / float(wy.sum())
        std_z = math.sqrt(max(var_x, var_y))
        if std_z == 0.0:  # Z is an atom (e.g. uniform noise inside the overlap: Z = 0)
            std_z = 1e-12
        # Window of the sum: +-10 std of L around the means, widened by `reach`, the farthest
        # one Z is kept from its means. One Z anywhere in its kept range plus the other k - 1
        # within 10 std of L still fits, as do two extreme Z with the rest near their mean when
        # k >= 16 (then reach = 10 std of L), so the circular FFT does not wrap them around.
        # (A fixed +-40 std of one Z was too narrow for bounded but spiky laws: beta = 0.5 at
        # tiny a sent 1.5% of L to -inf.) No further than the farthest finite Z actually lies
        # (Gaussian tails stop at ~9 std).
        s = math.sqrt(k) * std_z
        z_min, z_max = float(zf.min()), float(zf.max())
        farthest = max(max(mean_x, mean_y) - z_min, z_max - min(mean_x, mean_y))
        reach = min(max(40.0, _STD_WINDOW * math.sqrt(k)) * std_z, farthest)
        lo = k * min(mean_x, mean_y) - _STD_WINDOW * s - reach
        hi = k * max(mean_x, mean_y) + _STD_WINDOW * s + reach
        points = int(min(_MAX_POINTS, max(_MIN_POINTS, (hi - lo) / std_z * _Z_PER_STD)))
        points = 1 << math.ceil(math.log2(points))
        step = (hi - lo) / points
        # One Z on the lattice: index relative to lo / k so that k indices sum to S's index.
        # Values beyond the reach are cut: below to -inf (lowers L), above down to the cap
        # (lowers L), so a cut can only shrink the radius.
        z_lo = min(mean_x, mean_y) - reach
        z_hi = max(mean_x, mean_y) + reach
        lost_total = lost
        zc, wk, mean_c, var_c = zf, wf, mean_x, var_x
        if z_min < z_lo or z_max > z_hi:
            keep = zf >= z_lo
            lost_total += float(wf[~keep].sum())
            zc, wk = np.minimum(zf[keep], z_hi), wf[keep]
            mean_c = _dot(wk, zc) / float(wk.sum())
            dc = zc - mean_c
            var_c = _dot(wk, dc * dc) / float(wk.sum())
        raw = np.floor((zc - lo / k) / step + 0.5)
        # Rounding moves the mean of one Z by a tiny amount and adds ~step^2/12 to its
        # variance; k copies add both up. Measure them, then shift the lattice and rescale it
        # about the mean so that L keeps the exact mean and variance of the tabulated law.
        w_sum = float(wk.sum()) if wk is not wf else total
        raw_mean = _dot(wk, raw) / w_sum
        dr = raw - raw_mean
        mean_r = lo / k + step * raw_mean
        var_r = step * step * _dot(wk, dr * dr) / w_sum
        shrink = math.sqrt(var_c / var_r) if var_r > 0 else 1.0
        idx = raw.astype(np.int64) & (points - 1)  # circular index (points is a power of 2)
        pmf_z = np.bincount(idx, weights=wk, minlength=points)
        if k == 1:
            pmf = pmf_z
        else:
            spec = np.fft.rfft(pmf_z)
            pmf = np.fft.irfft(spec**k, n=points)
        pmf = np.clip(pmf, 0.0, None)  # FFT round-off (~1e-17) must not create negative mass
        finite_mass = (1.0 - lost_total) ** k
        pmf *= finite_mass / max(pmf.sum(), 1e-300)
        # Lattice point j sits at lo + j * step with the rounded law's mean k * mean_r; map it
        # to k * mean_c + shrink * (lo + j * step - k * mean_r).
        start = k * mean_c + shrink * (lo - k * mean_r)
        return LatticeLaw(start, shrink * step, pmf, 1.0 - finite_mass)
