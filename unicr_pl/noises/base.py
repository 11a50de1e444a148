"""The `Noise` interface: an isotropic density, iid per coordinate, with scale `alpha`.

Every family is written for a standard variable y = x / alpha; the base class handles the scale,
the construction from `sigma` (the per-coordinate RMS) and sampling by shape or like-tensor.
`log_prob` is *unnormalised*: only differences of log-densities enter the likelihood ratio.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import expit

ShapeOrTensor = Sequence[int] | torch.Size | torch.Tensor


def check_finite(name: str, value: float) -> float:
    """Returns `value` as a float, or raises ValueError naming `name` if it is not finite."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_positive(name: str, value: float) -> float:
    """Returns `value` as a float, or raises ValueError naming `name` unless it is in (0, inf)."""
    value = check_finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be in (0, inf), got {value}")
    return value


def check_unit_interval(name: str, value: float) -> float:
    """Returns `value` as a float, or raises ValueError naming `name` unless it is in [0, 1]."""
    value = check_finite(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


class Noise(ABC):
    """An isotropic noise: coordinates iid with density proportional to exp(log_prob(x)).

    Args:
        alpha: scale of the density (Table 7 of the paper). Give `alpha` or `sigma`, not both.
        sigma: per-coordinate RMS, E[eps_i^2]^(1/2); `alpha` is derived from it. Families with
            an infinite RMS (Cauchy, Pareto with beta <= 2) need `alpha`.
    """

    name: str = "noise"
    symmetric: bool = True
    _sample_in_float64: bool = False

    def __init__(self, alpha: float | None = None, sigma: float | None = None) -> None:
        if alpha is not None and sigma is not None:
            raise ValueError(f"{self.name}: give alpha or sigma, not both")
        if alpha is None:
            sigma = 1.0 if sigma is None else sigma
            sigma = check_positive("sigma", sigma)
            rms1 = self._rms_std()
            if not math.isfinite(rms1):
                beta = getattr(self, "beta", None)
                family = self.name if beta is None else f"{self.name} with beta={beta:g}"
                raise ValueError(
                    f"{family} has infinite RMS, so sigma cannot set its scale: give alpha instead"
                )
            alpha = sigma / rms1
        self.alpha = check_positive("alpha", alpha)

    # ---- what a family implements, for the standard variable y = x / alpha ----
    @abstractmethod
    def _log_prob_std(self, y: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-density of y = x / alpha, elementwise."""

    @abstractmethod
    def _sample_std(self, shape: torch.Size, device, dtype, generator) -> torch.Tensor:
        """Exact draws of y = x / alpha."""

    @abstractmethod
    def _icdf_lower_std(self, u: np.ndarray) -> np.ndarray:
        """Quantile of y at u in (0, 1/2], float64, accurate deep into the lower tail."""

    @abstractmethod
    def _rms_std(self) -> float:
        """RMS of y (inf where it does not exist)."""

    def params(self) -> dict:
        """The parameters that define this noise (reports; `identity` for cache keys)."""
        return {"alpha": self.alpha}

    def identity(self) -> str:
        """Stable hex digest of the law itself: family, class and every parameter at full
        float64 precision, plus `_identity_extra` (a custom density's fingerprint).

        The one owner of a noise's identity: every cache of curves, engines or bounds keys on
        it, so two laws that differ anywhere (even in the 17th digit of a parameter) never
        share a cached certificate. `describe()` and `repr` round to 6 digits: never keys.
        """
        spec = {
            "family": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": {k: _exact(v) for k, v in sorted(self.params().items())},
            "extra": self._identity_extra(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def with_alpha(self, alpha: float) -> Noise:
        """The same family and shape at scale `alpha`. Every radius is linear in the scale
        (R(c X) = c R(X): the likelihood ratio of a shift delta under c X is that of delta / c
        under X), so caches hold the alpha = 1 law and multiply."""
        out = copy.copy(self)  # a family's state beyond alpha is in standard units
        out.alpha = check_positive("alpha", alpha)
        return out

    def _identity_extra(self) -> str:
        """What defines the law beyond `params()` (empty for the closed-form families)."""
        return ""

    # ---- public interface ----
    @property
    def is_gaussian(self) -> bool:
        """Whether this law is a Gaussian, so that Cohen's closed forms certify it exactly in
        every norm. The one place that decides it: families override it."""
        return False

    @property
    def sigma(self) -> float:
        """Per-coordinate RMS (inf for heavy tails)."""
        return self.alpha * self._rms_std()

    def describe(self) -> str:
        """Short human-readable name with parameters, e.g. 'gennormal(alpha=1.2, beta=1.5)'."""
        inner = ", ".join(f"{k}={v:.6g}" for k, v in self.params().items() if k != "alpha")
        return f"{self.name}({inner})" if inner else self.name

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.6g}" for k, v in self.params().items())
        return f"{self.name}({inner})"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-density per coordinate (the normalising constant is dropped)."""
        return self._log_prob_std(x / self.alpha)

    def log_prob_(self, x: torch.Tensor) -> torch.Tensor:
        """`log_prob` written over `x` itself (no autograd), returned.

        Why: the exact radius engine evaluates the density on ~170k points per law and 40-100
        laws per radius. Megabyte temporaries freed at once make glibc hand the memory back to
        the OS and fault it in again on the next call, which cost more than the arithmetic.
        """
        return self._log_prob_std_(x.div_(self.alpha))

    def _log_prob_std_(self, y: torch.Tensor) -> torch.Tensor:
        """In-place `_log_prob_std`; families whose formula allows it override this."""
        return y.copy_(self._log_prob_std(y))

    def sample(
        self,
        shape_or_like: ShapeOrTensor,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draws iid noise: exactly in law for the built-in families (no lattice, no
        truncation); a custom density draws from its tabulated inverse CDF (`custom.py`).

        Args:
            shape_or_like: a shape, or a tensor whose shape, device and dtype are copied.
            generator: optional torch.Generator (on the target device) for reproducible draws.
            device, dtype: override the like-tensor's (defaults: CPU, float32).
        """
        if isinstance(shape_or_like, torch.Tensor):
            shape = shape_or_like.shape
            device = shape_or_like.device if device is None else device
            dtype = shape_or_like.dtype if dtype is None else dtype
        else:
            shape = torch.Size(shape_or_like)
        dtype = torch.float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ValueError(f"noise needs a floating dtype, got {dtype}")
        # Draws are made in the requested precision (half precisions go through float32);
        # families whose inverse CDF needs double precision in the tails draw in float64.
        work = torch.float64 if self._sample_in_float64 or dtype == torch.float64 else torch.float32
        y = self._sample_std(shape, device, work, generator)
        return (self.alpha * y).to(dtype)

    def quantile_logodds(self, t: np.ndarray) -> np.ndarray:
        """Quantile at u = 1 / (1 + exp(-t)), float64, accurate in both tails.

        Parametrising by log-odds keeps u and 1 - u both representable (|t| up to ~700),
        which the radius engine needs for tail masses far below float64's epsilon.
        """
        t = np.asarray(t, dtype=np.float64)
        lower = self._icdf_lower_std(expit(-np.abs(t)))
        # Symmetric families: Q(1 - q) = -Q(q).
        return self.alpha * np.where(t <= 0, lower, -lower)

    def icdf(self, u: np.ndarray) -> np.ndarray:
        """Quantile function at probabilities u in (0, 1), float64."""
        u = np.asarray(u, dtype=np.float64)
        return self.quantile_logodds(np.log(u) - np.log1p(-u))


def _exact(value) -> str:
    """A parameter as an exact string: float.hex for numbers (no rounding), repr otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return repr(value)
    return float(value).hex()


def uniform_open(shape: torch.Size, device, dtype, generator) -> torch.Tensor:
    """U(0, 1) draws with 0 excluded (so that log(U) and U^(-1/beta) stay finite)."""
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    return u.clamp_min_(torch.finfo(dtype).tiny)


def random_sign(shape: torch.Size, device, dtype, generator) -> torch.Tensor:
    """+-1 with probability 1/2 each."""
    bits = torch.randint(0, 2, shape, device=device, generator=generator)
    return bits.to(dtype).mul_(2).sub_(1)  # in place: the same values, no int64 temporaries
