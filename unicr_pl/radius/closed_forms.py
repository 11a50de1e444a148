"""Closed-form certified radii from the literature, for comparison with UniCR.

All take the noise *scale parameters of this library* (see `unicr_pl.noises`), and return 0
(abstain) where p_A <= p_B. `p_b=None` means the binary case, p_B = 1 - p_A.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize, special

from unicr_pl.radius.checks import check_probabilities


def _binary(p_a: float, p_b: float | None) -> tuple[float, float]:
    return check_probabilities(p_a, p_b)


def cohen_l2(sigma: float, p_a: float, p_b: float | None = None) -> float:
    """Cohen et al. (2019), Gaussian N(0, sigma^2 I) against l2.

    sigma / 2 (Phi^-1(p_A) - Phi^-1(p_B)); binary: sigma Phi^-1(p_A).
    """
    p_a, p_b = _binary(p_a, p_b)
    if p_a <= p_b:
        return 0.0
    return 0.5 * sigma * float(special.ndtri(p_a) - special.ndtri(p_b))


def gaussian_l1(sigma: float, p_a: float, p_b: float | None = None) -> float:
    """Gaussian against l1: the l2 radius (the worst l1 direction is an axis, where l1 = l2)."""
    return cohen_l2(sigma, p_a, p_b)


def gaussian_linf(sigma: float, p_a: float, dim: int, p_b: float | None = None) -> float:
    """Gaussian against l_inf: the l2 radius over sqrt(d) (the worst direction is a diagonal)."""
    return cohen_l2(sigma, p_a, p_b) / math.sqrt(dim)


def teng_laplace_l1(scale: float, p_a: float, p_b: float | None = None) -> float:
    """Teng et al. (2020), Laplace with scale b (density exp(-|x|/b)) against l1.

    max(b/2 log(p_A/p_B), -b log(1 - p_A + p_B)); binary: -b log(2 (1 - p_A)).
    """
    p_a, p_b = _binary(p_a, p_b)
    if p_a <= p_b:
        return 0.0
    r1 = 0.5 * scale * math.log(p_a / p_b) if p_b > 0 else math.inf
    r2 = -scale * math.log(1 - p_a + p_b) if p_a - p_b < 1 else math.inf
    return max(r1, r2)


def uniform_l1(half_width: float, p_a: float, p_b: float | None = None) -> float:
    """Yang et al. (2020), uniform on [-w, w] per coordinate against l1: w (p_A - p_B)."""
    p_a, p_b = _binary(p_a, p_b)
    return max(0.0, half_width * (p_a - p_b))


def yang_pareto_l1(scale: float, beta: float, p_a: float) -> float:
    """Yang et al. (2020), symmetric Pareto (1 + |x|/scale)^-(beta+1) against l1 (a lower bound).

    Binary case only: scale (2p-1)/beta 2F1(1, beta/(beta+1); beta/(beta+1)+1; (2p-1)^(1+1/beta)).
    """
    p_a, _ = _binary(p_a, None)
    if p_a <= 0.5:
        return 0.0
    z = 2 * p_a - 1
    c = beta / (beta + 1)
    return float(scale * z / beta * special.hyp2f1(1, c, c + 1, z ** (1 + 1 / beta)))


def pixeldp_l2(sigma: float, p_a: float, p_b: float | None = None) -> float:
    """PixelDP (Lecuyer et al., 2019) for the Gaussian mechanism against l2.

    A perturbation of l2 size L gives (eps, delta)-DP with eps = L sqrt(2 ln(1.25/delta)) / sigma
    (eps <= 1); the prediction is robust if p_A > e^(2 eps) p_B + (1 + e^eps) delta. The radius
    is the largest such L over delta (searched on a fine log grid).
    """
    p_a, p_b = _binary(p_a, p_b)
    if p_a <= p_b:
        return 0.0
    best = 0.0
    for delta in np.logspace(-12, math.log10(0.5 * (p_a - p_b)), 400):

        def margin(eps: float, delta: float = delta) -> float:
            return p_a - math.exp(2 * eps) * p_b - (1 + math.exp(eps)) * delta

        if margin(0.0) <= 0:
            continue
        eps = 1.0 if margin(1.0) > 0 else optimize.brentq(margin, 0.0, 1.0)
        best = max(best, eps * sigma / math.sqrt(2 * math.log(1.25 / delta)))
    return best


def references(noise, dim: int) -> list[tuple[str, float, Callable[[float], float]]]:
    """Closed forms that apply to this noise: (label, l_p order, binary p_A -> R).

    Gaussian: Cohen l2, l1 (= l2), l_inf (= l2 / sqrt d), PixelDP l2; Laplace: Teng l1;
    uniform: Yang l1; Pareto: Yang's l1 lower bound.
    """
    name = noise.name
    if noise.is_gaussian:
        s = noise.sigma
        return [
            ("cohen_l2", 2.0, lambda p: cohen_l2(s, p)),
            ("gaussian_l1", 1.0, lambda p: gaussian_l1(s, p)),
            ("gaussian_linf", math.inf, lambda p: gaussian_linf(s, p, dim)),
            ("pixeldp_l2", 2.0, lambda p: pixeldp_l2(s, p)),
        ]
    if name == "laplace":
        return [("teng_l1", 1.0, lambda p: teng_laplace_l1(noise.alpha, p))]
    if name == "uniform":
        return [("uniform_l1", 1.0, lambda p: uniform_l1(noise.alpha, p))]
    if name == "pareto":
        return [("yang_pareto_l1", 1.0, lambda p: yang_pareto_l1(noise.alpha, noise.beta, p))]
    return []
