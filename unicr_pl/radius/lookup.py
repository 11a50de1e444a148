"""Per-sample radii for dataset certification: exact closed forms where they are tight,
cached curves for the binary case, the exact engine for multi-class bounds."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from unicr_pl.noises import Noise
from unicr_pl.radius.api import certified_radii
from unicr_pl.radius.bounds import EXACT_BOUNDS, proven_radius
from unicr_pl.radius.checks import check_norm
from unicr_pl.radius.curve import RadiusCurve, default_p_grid

__all__ = ["SampleRadius"]


class SampleRadius:
    """Maps (p_A, p_B) of each sample to its certified radius for several norms.

    `__call__` gives the PROVEN radius (a sound lower bound over all directions, never above
    the family value: `unicr_pl.radius.bounds`), `family` the structured-family minimum (an
    upper bound of the true radius, comparable to the UniCR paper), `bound` the theorem
    behind each norm's proven radius and `tight` whether the two coincide (proven exact).

    Family values: Gaussian noise: Cohen's sigma/2 (Phi^-1(p_A) - Phi^-1(p_B)) for p <= 2 and
    that times d^(1/p - 1/2) for p > 2 (exact: the axis and the diagonal are the worst l_p
    directions on an l2 sphere). Other noises: a `RadiusCurve` on a dense p_A grid (binary
    case; the look-up steps down to the grid), or the exact engine per sample (multi-class).
    """

    def __init__(
        self, noise: Noise, dim: int, norms, multiclass: bool = False, points: int = 4000
    ) -> None:
        self.noise, self.dim, self.multiclass = noise, dim, multiclass
        self.norms = [check_norm(p) for p in norms]
        self.curve = None
        if not noise.is_gaussian and not multiclass:
            grid = default_p_grid(points, p_max=1 - 1e-7)
            self.curve = RadiusCurve(noise, dim, [str(p) for p in self.norms], grid)
        self.proven = proven_radius(noise, dim)
        self.bound = self.proven.bound_names(self.norms)
        self.tight = {p: any(b in self.bound[p] for b in EXACT_BOUNDS) for p in self.norms}

    def __call__(self, p_a: np.ndarray, p_b: np.ndarray) -> dict[float, np.ndarray]:
        """Proven radius per norm: the best sound bound, capped by the family value."""
        return self.both(p_a, p_b)[0]

    def both(self, p_a: np.ndarray, p_b: np.ndarray) -> tuple[dict, dict[float, np.ndarray]]:
        """(proven, family) radii per norm from one family evaluation: for multi-class
        non-Gaussian noise the family value is one exact-engine solve per sample."""
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        family = self.family(p_a, p_b)
        found = self.proven.radii(p_a.ravel(), p_b.ravel(), self.norms)
        proven = {p: np.minimum(found[p][0].reshape(p_a.shape), family[p]) for p in self.norms}
        return proven, family

    def family(self, p_a: np.ndarray, p_b: np.ndarray) -> dict[float, np.ndarray]:
        """The structured-family radius per norm (an upper bound of the true radius)."""
        p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
        out = {}
        if self.noise.is_gaussian:
            with np.errstate(divide="ignore", invalid="ignore"):
                l2 = 0.5 * self.noise.sigma * (ndtri(p_a) - ndtri(p_b))
            l2 = np.where(p_a > p_b, l2, 0.0)
            for p in self.norms:
                out[p] = (
                    l2 if p <= 2 else l2 * self.dim ** ((0.0 if math.isinf(p) else 1 / p) - 0.5)
                )
        elif self.curve is not None:
            for p in self.norms:
                out[p] = np.where(p_a > 0.5, self.curve.radius_family(p_a, p), 0.0)
        else:
            zero = dict.fromkeys(self.norms, 0.0)
            per_sample = [
                {
                    r.norm: r.radius_family
                    for r in certified_radii(
                        self.noise, float(a), float(b), norms=self.norms, dim=self.dim
                    )
                }
                if a > b
                else zero  # abstentions carry p_A = 0, p_B = 1
                for a, b in zip(p_a, p_b, strict=True)
            ]
            for p in self.norms:
                out[p] = np.array([r[p] for r in per_sample])
        return out
