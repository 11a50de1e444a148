"""The noise families of the paper's Table 7, plus uniform.

Densities (y = x / alpha, unnormalised):
    gaussian   exp(-y^2)                     laplace    exp(-|y|)
    hypsecant  sech(y)                       gennormal  exp(-|y|^beta)
    cauchy     1 / (1 + y^2)                 pareto     (1 + |y|)^-(beta + 1)
    lapgauss   beta exp(-|y|) + (1 - beta) exp(-y^2)
    expmix     exp(-beta |y| - (1 - beta) y^2)
    uniform    1 on [-1, 1]
Note that Table 7 writes the Gaussian as exp(-|x/alpha|^2), so its standard deviation is
alpha / sqrt(2); build from `sigma` to get Cohen et al.'s sigma.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate, special, stats

from unicr_pl.noises.base import (
    Noise,
    check_positive,
    check_unit_interval,
    random_sign,
    uniform_open,
)

SQRT_PI = math.sqrt(math.pi)


class Gaussian(Noise):
    name = "gaussian"
    is_gaussian = True

    def _log_prob_std(self, y):
        return -y * y

    def _log_prob_std_(self, y):
        return y.square_().neg_()

    def _sample_std(self, shape, device, dtype, generator):
        return torch.randn(shape, device=device, dtype=dtype, generator=generator) / math.sqrt(2)

    def _icdf_lower_std(self, u):
        return special.ndtri(u) / math.sqrt(2)

    def _rms_std(self):
        return 1 / math.sqrt(2)


class Laplace(Noise):
    name = "laplace"

    def _log_prob_std(self, y):
        return -y.abs()

    def _log_prob_std_(self, y):
        return y.abs_().neg_()

    def _sample_std(self, shape, device, dtype, generator):
        e = uniform_open(shape, device, dtype, generator).log_().neg_()
        return e.mul_(random_sign(shape, device, dtype, generator))

    def _icdf_lower_std(self, u):
        return np.log(2 * u)

    def _rms_std(self):
        return math.sqrt(2)


class HyperbolicSecant(Noise):
    name = "hypsecant"

    def _log_prob_std(self, y):
        a = y.abs()
        # log sech(y) = -log cosh(y), written to stay finite for large |y|.
        return -(a + torch.log1p(torch.exp(-2 * a)) - math.log(2))

    def _log_prob_std_(self, y):
        a = y.abs_()
        return a.add_(torch.mul(a, -2).exp_().log1p_()).sub_(math.log(2)).neg_()

    def _sample_std(self, shape, device, dtype, generator):
        u = uniform_open(shape, device, dtype, generator)
        return torch.log(torch.tan(math.pi * u / 2))

    def _icdf_lower_std(self, u):
        return np.log(np.tan(np.pi * u / 2))

    def _rms_std(self):
        return math.pi / 2


def rejection_sample(shape, propose, device, dtype) -> torch.Tensor:
    """Fills a tensor of `shape` by rejection: `propose(m)` returns m candidates and a mask of
    the accepted ones; rejected slots are proposed again until every slot is filled.

    The first round's candidates are the output itself (no scatter of the ~95% accepted).
    Each round needs the number of rejections on the host: on CUDA that is one
    synchronisation per round (about 4 per call), inherent to exact rejection sampling.
    """
    out, ok = propose(math.prod(shape))
    todo = _nonzero(~ok)
    while todo.numel() > 0:
        values, ok = propose(todo.numel())
        out[todo[ok]] = values[ok]
        todo = todo[~ok]
    return out.view(shape)


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Positions of the True entries of a 1-D mask (numpy's is ~10x faster on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def sample_gamma(shape, concentration: float, device, dtype, generator) -> torch.Tensor:
    """Gamma(concentration, 1) draws by Marsaglia & Tsang (2000), exact, generator-seedable.

    torch's own Gamma sampler takes no generator, so runs could not be reproduced per call.
    """
    boost = concentration < 1
    k = concentration + 1 if boost else concentration
    d = k - 1 / 3
    c = 1 / math.sqrt(9 * d)
    tiny = torch.finfo(dtype).tiny

    def propose(m: int):
        # Accept d v iff v > 0 and log u < x^2 / 2 + d - d v + d log v. The operations are
        # in place but in the same order as the formula, so the values are bit-identical.
        x = torch.randn(m, device=device, dtype=dtype, generator=generator)
        u = uniform_open((m,), device, dtype, generator)
        v = x.mul(c).add_(1).pow_(3)
        dv = v.mul(d)
        bound = x.mul(0.5).mul_(x).add_(d).sub_(dv)
        bound.add_(v.clamp_min(tiny).log_().mul_(d))
        return dv, (v > 0).logical_and_(u.log_() < bound)

    out = rejection_sample(shape, propose, device, dtype)
    if boost:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        out.mul_(uniform_open(out.shape, device, dtype, generator).pow_(1 / concentration))
    return out


class GeneralNormal(Noise):
    name = "gennormal"

    def __init__(self, alpha=None, sigma=None, beta: float = 2.0) -> None:
        self.beta = check_positive("beta", beta)
        super().__init__(alpha=alpha, sigma=sigma)

    def params(self):
        return {"alpha": self.alpha, "beta": self.beta}

    @property
    def is_gaussian(self) -> bool:
        return self.beta == 2.0

    def _log_prob_std(self, y):
        return -(y.abs() ** self.beta)

    def _log_prob_std_(self, y):
        return y.abs_().pow_(self.beta).neg_()

    def _sample_std(self, shape, device, dtype, generator):
        # |y|^beta ~ Gamma(1 / beta, 1).
        g = sample_gamma(shape, 1 / self.beta, device, dtype, generator)
        return g.pow_(1 / self.beta).mul_(random_sign(shape, device, dtype, generator))

    def _icdf_lower_std(self, u):
        return stats.gennorm.ppf(u, self.beta)

    def _rms_std(self):
        return math.exp(0.5 * (special.gammaln(3 / self.beta) - special.gammaln(1 / self.beta)))


class Cauchy(Noise):
    name = "cauchy"

    def _log_prob_std(self, y):
        return -torch.log1p(y * y)

    def _log_prob_std_(self, y):
        return y.square_().log1p_().neg_()

    def _sample_std(self, shape, device, dtype, generator):
        u = uniform_open(shape, device, dtype, generator)
        return torch.tan(math.pi * (u - 0.5))

    def _icdf_lower_std(self, u):
        return -1 / np.tan(np.pi * u)

    def _rms_std(self):
        return math.inf


class Pareto(Noise):
    """Symmetric Pareto (Lomax) noise: |y| has survival (1 + |y|)^-beta."""

    name = "pareto"

    def __init__(self, alpha=None, sigma=None, beta: float = 3.0) -> None:
        self.beta = check_positive("beta", beta)
        super().__init__(alpha=alpha, sigma=sigma)

    def params(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def _log_prob_std(self, y):
        return -(self.beta + 1) * torch.log1p(y.abs())

    def _log_prob_std_(self, y):
        return y.abs_().log1p_().mul_(-(self.beta + 1))

    def _sample_std(self, shape, device, dtype, generator):
        u = uniform_open(shape, device, dtype, generator)
        return torch.expm1(-torch.log(u) / self.beta) * random_sign(shape, device, dtype, generator)

    def _icdf_lower_std(self, u):
        return -np.expm1(-np.log(2 * u) / self.beta)

    def _rms_std(self):
        if self.beta <= 2:
            return math.inf
        return math.sqrt(2 / ((self.beta - 1) * (self.beta - 2)))


class LaplaceGaussianMixture(Noise):
    """Density beta exp(-|y|) + (1 - beta) exp(-y^2), read literally from Table 7.

    As a mixture of *normalised* laws, the Laplace component has weight
    w = 2 beta / (2 beta + (1 - beta) sqrt(pi)), the Gaussian N(0, 1/2) the rest.
    """

    name = "lapgauss"

    def __init__(self, alpha=None, sigma=None, beta: float = 0.5) -> None:
        self.beta = check_unit_interval("beta", beta)
        self.weight = 2 * self.beta / (2 * self.beta + (1 - self.beta) * SQRT_PI)
        super().__init__(alpha=alpha, sigma=sigma)

    def params(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def _log_prob_std(self, y):
        log_lap = math.log(self.beta) - y.abs() if self.beta > 0 else torch.full_like(y, -math.inf)
        if self.beta < 1:
            log_gauss = math.log(1 - self.beta) - y * y
        else:
            log_gauss = torch.full_like(y, -math.inf)
        return torch.logaddexp(log_lap, log_gauss)

    def _sample_std(self, shape, device, dtype, generator):
        lap = Laplace(alpha=1.0)._sample_std(shape, device, dtype, generator)
        gauss = Gaussian(alpha=1.0)._sample_std(shape, device, dtype, generator)
        pick = torch.rand(shape, device=device, dtype=dtype, generator=generator) < self.weight
        return torch.where(pick, lap, gauss)

    def _cdf_lower(self, y: np.ndarray) -> np.ndarray:
        # For y <= 0: P(Y <= y) of each component, mixed.
        return self.weight * 0.5 * np.exp(y) + (1 - self.weight) * special.ndtr(y * math.sqrt(2))

    def _icdf_lower_std(self, u):
        u = np.asarray(u, dtype=np.float64)
        # The mixture quantile lies between the components' quantiles: bisect in that bracket.
        q_lap, q_gauss = np.log(2 * u), special.ndtri(u) / math.sqrt(2)
        lo, hi = np.minimum(q_lap, q_gauss), np.minimum(np.maximum(q_lap, q_gauss), 0.0)
        log_u = np.log(u)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            below = np.log(self._cdf_lower(mid)) < log_u
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            if np.all(hi - lo <= 1e-15 * np.maximum(1.0, np.abs(hi))):
                break
        return 0.5 * (lo + hi)

    def _rms_std(self):
        return math.sqrt(2 * self.weight + 0.5 * (1 - self.weight))


class ExponentialMixture(Noise):
    """Density exp(-beta |y| - (1 - beta) y^2): |y| is a normal truncated to [0, inf).

    Completing the square, |y| = s z - c with z ~ N(0, 1) conditioned on z >= c / s,
    s = 1 / sqrt(2 (1 - beta)), c = beta / (2 (1 - beta)); beta = 1 is the Laplace law.
    """

    name = "expmix"
    _sample_in_float64 = True  # ndtri deep in the normal tail

    def __init__(self, alpha=None, sigma=None, beta: float = 0.5) -> None:
        self.beta = check_unit_interval("beta", beta)
        super().__init__(alpha=alpha, sigma=sigma)

    def params(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def _shift_scale(self) -> tuple[float, float]:
        s = 1 / math.sqrt(2 * (1 - self.beta))
        return self.beta / (2 * (1 - self.beta)), s

    def _log_prob_std(self, y):
        return -self.beta * y.abs() - (1 - self.beta) * y * y

    def _sample_std(self, shape, device, dtype, generator):
        if self.beta == 1:
            return Laplace(alpha=1.0)._sample_std(shape, device, dtype, generator)
        c, s = self._shift_scale()
        z0 = c / s
        tail = float(special.ndtr(-z0))  # scipy: torch's ndtr underflows near -22
        if tail > 1e-250:  # inverse CDF of the normal tail beyond z0
            u = uniform_open(shape, device, dtype, generator)
            z = torch.special.ndtri(u.mul_(tail)).neg_()
        else:  # far tail: Robert's (1995) exponential proposal, exact rejection
            z = self._far_tail(shape, z0, device, dtype, generator)
        return z.mul_(s).sub_(c).mul_(random_sign(shape, device, dtype, generator))

    @staticmethod
    def _far_tail(shape, z0, device, dtype, generator):
        def propose(m: int):
            z = z0 - torch.log(uniform_open((m,), device, dtype, generator)) / z0
            u = uniform_open((m,), device, dtype, generator)
            return z, torch.log(u) <= -0.5 * (z - z0) ** 2

        return rejection_sample(shape, propose, device, dtype)

    def _icdf_lower_std(self, u):
        if self.beta == 1:
            return np.log(2 * u)
        c, s = self._shift_scale()
        # P(|y| > m) = 2u  <=>  log ndtr(-z) = log(2u) + log ndtr(-c/s), in logs for large c/s.
        z = -special.ndtri_exp(np.log(2 * u) + special.log_ndtr(-c / s))
        return -(s * z - c)

    def _rms_std(self):
        def dens(y):
            return math.exp(-self.beta * y - (1 - self.beta) * y * y)

        mass = integrate.quad(dens, 0, math.inf)[0]
        second = integrate.quad(lambda y: y * y * dens(y), 0, math.inf)[0]
        return math.sqrt(second / mass)


class Uniform(Noise):
    name = "uniform"

    def _log_prob_std(self, y):
        inside = y.abs() <= 1
        return torch.where(inside, torch.zeros_like(y), torch.full_like(y, -math.inf))

    def _log_prob_std_(self, y):
        inside = y.abs_() <= 1
        return y.fill_(-math.inf).masked_fill_(inside, 0.0)

    def _sample_std(self, shape, device, dtype, generator):
        return 2 * torch.rand(shape, device=device, dtype=dtype, generator=generator) - 1

    def _icdf_lower_std(self, u):
        return 2 * u - 1

    def _rms_std(self):
        return 1 / math.sqrt(3)


__all__ = [
    "Cauchy",
    "ExponentialMixture",
    "Gaussian",
    "GeneralNormal",
    "HyperbolicSecant",
    "Laplace",
    "LaplaceGaussianMixture",
    "Pareto",
    "Uniform",
]
