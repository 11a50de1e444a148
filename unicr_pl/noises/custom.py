"""`custom`: any user-supplied 1-D log-density, sampled by a numerical inverse CDF.

The density is tabulated on a fine grid over its effective support (where it exceeds 1e-35 of
its maximum, found automatically unless `support` is given); the CDF and the survival function
are integrated from each end so that both tails keep full relative precision.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import expit

from unicr_pl.noises.base import Noise, check_finite

LogDensity = Callable[[torch.Tensor], torch.Tensor]
_GRID = 1 << 17
_LOG_FLOOR = -80.0  # e^-80 ~ 2e-35 of the peak: treated as outside the support
# The fixed grid of the identity fingerprint (standard variable) and its sampler draws.
_FINGERPRINT_GRID = np.linspace(-64.0, 64.0, 1 << 14 | 1)
_FINGERPRINT_DRAWS = 1024


def resolve_log_density(spec: LogDensity | str) -> LogDensity:
    """A callable, or 'package.module:function' imported by name (never evaluated as code)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            "custom noise: log_density must be a callable or a 'module:function' string, "
            f"got {spec!r}"
        )
    module_name, attr = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"custom noise: cannot import log_density {spec!r}: {err}") from err
    if not callable(fn):
        raise ValueError(f"custom noise: {spec!r} is not callable")
    return fn


class CustomNoise(Noise):
    """Noise with density proportional to exp(log_density(x / alpha)).

    Args:
        log_density: elementwise torch function of the standard variable, or 'module:function'.
        support: optional (lo, hi) of the standard variable; found automatically otherwise.
        alpha, sigma: scale, as for every family (sigma uses the numerically computed RMS).
    """

    name = "custom"
    _sample_in_float64 = True  # the tabulated CDF is float64

    def __init__(
        self,
        log_density: LogDensity | str,
        alpha: float | None = None,
        sigma: float | None = None,
        support: tuple[float, float] | None = None,
    ) -> None:
        self._fn = resolve_log_density(log_density)
        self._label = (
            log_density if isinstance(log_density, str) else getattr(log_density, "__name__", "fn")
        )
        self._tabulate(support)
        super().__init__(alpha=alpha, sigma=sigma)

    def params(self):
        return {"alpha": self.alpha}

    def describe(self) -> str:
        return f"custom({self._label})"

    def _identity_extra(self) -> str:
        """Fingerprint of the density itself, not its name: the log-density on a fixed dense
        grid, the tabulated CDF and the sampler's draws for a fixed seed (float64 bytes).

        Computed on every call, never stored: a callable edited after construction gets a
        new identity (and so a new cache entry) the next time a key is asked for.
        """
        h = hashlib.sha256()
        logp = np.nan_to_num(self._eval(_FINGERPRINT_GRID), nan=-1.0, neginf=-np.inf)
        gen = torch.Generator().manual_seed(0)
        draws = self._sample_std((_FINGERPRINT_DRAWS,), "cpu", torch.float64, gen)
        for part in (logp, self._y, self._cdf, self._sf, draws.numpy()):
            h.update(np.ascontiguousarray(part, dtype=np.float64).tobytes())
        h.update(b"symmetric" if self.symmetric else b"asymmetric")
        return h.hexdigest()

    def _eval(self, y: np.ndarray) -> np.ndarray:
        out = self._call(torch.as_tensor(y, dtype=torch.float64))
        out = np.asarray(torch.as_tensor(out, dtype=torch.float64), dtype=np.float64)
        if out.shape != np.shape(y):
            raise ValueError(
                f"custom noise: log_density {self._label} must return one value per input "
                f"(shape {np.shape(y)}), got shape {out.shape}"
            )
        return out

    def _check_values(self, y: np.ndarray, logp: np.ndarray, where: str) -> None:
        bad = np.isnan(logp) | (logp == np.inf)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"custom noise: log_density {self._label} returned {logp[i]} at y={y[i]:.6g} "
                f"({where}); return -inf where the density is zero"
            )

    def _check_outside(self, lo: float, hi: float, peak: float) -> None:
        """The engine shifts the density by up to many widths: beyond the support it must be
        -inf or negligible (else the tabulated law is a truncation of it, and improper)."""
        offsets = (hi - lo) * np.geomspace(1e-9, 1e6, 64)
        y = np.concatenate([lo - offsets, hi + offsets])
        logp = self._eval(y)
        self._check_values(y, logp, "outside the support")
        heavy = logp - peak > _LOG_FLOOR
        if heavy.any():
            i = int(np.argmax(heavy))
            rel = logp[i] - peak + 0.0  # + 0.0: no "-0" in the message
            raise ValueError(
                f"custom noise: the density is not negligible outside its support ({lo:.6g}, "
                f"{hi:.6g}): at y={y[i]:.6g} it is exp({rel:.3g}) of its peak (not "
                "normalisable there, or cut off): widen support or return -inf outside it"
            )

    def _find_support(self) -> tuple[float, float]:
        y = np.linspace(-50, 50, 20001)
        logp = self._eval(y)
        self._check_values(y, logp, "on [-50, 50]")
        if not np.any(np.isfinite(logp)):
            raise ValueError("custom noise: log_density is -inf on all of [-50, 50]; pass support")
        peak = float(np.max(logp[np.isfinite(logp)]))
        ends = []
        for sign in (-1.0, 1.0):
            r = 1.0
            while r < 1e9 and self._eval(np.array([sign * r]))[0] - peak > _LOG_FLOOR:
                r *= 2
            if r >= 1e9:
                raise ValueError(
                    "custom noise: the density does not fall below 1e-35 of its peak within "
                    "|y| < 1e9 (not normalisable, or tails too heavy to tabulate); pass "
                    "support=(lo, hi) explicitly"
                )
            ends.append(sign * r)
        return ends[0], ends[1]

    def _tabulate(self, support) -> None:
        lo, hi = self._find_support() if support is None else map(float, support)
        lo, hi = check_finite("support[0]", lo), check_finite("support[1]", hi)
        if not lo < hi:
            raise ValueError(f"custom noise: support must have lo < hi, got ({lo}, {hi})")
        y = np.linspace(lo, hi, _GRID)
        logp = self._eval(y)
        self._check_values(y, logp, "on its support")
        if not np.any(np.isfinite(logp)):
            raise ValueError(f"custom noise: log_density is -inf on all of ({lo}, {hi})")
        self._check_outside(lo, hi, float(np.max(logp)))
        dens = np.exp(logp - np.max(logp))
        cell = 0.5 * (dens[1:] + dens[:-1]) * np.diff(y)  # trapezoid mass per cell
        total = cell.sum()
        if not total > 0:
            raise ValueError("custom noise: the density integrates to zero on its support")
        self._device_tables: dict = {}  # the tables below as tensors, see `_tables`
        self._y = y
        self._cdf = np.concatenate([[0.0], np.cumsum(cell)]) / total
        self._sf = np.concatenate([np.cumsum(cell[::-1])[::-1], [0.0]]) / total
        mid = 0.5 * (y[1:] + y[:-1])
        mean = float((cell * mid).sum() / total)
        self._rms = math.sqrt(float((cell * mid * mid).sum() / total))
        self.symmetric = bool(
            abs(mean) < 1e-6 * max(self._rms, 1e-300)
            and np.allclose(self._eval(mid), self._eval(-mid), atol=1e-9, equal_nan=True)
        )

    def _call(self, y):
        """The user's log-density; whatever it raises becomes a ValueError naming it."""
        try:
            return self._fn(y)
        except Exception as err:  # noqa: BLE001 (user code: any failure is bad input)
            name = type(err).__name__
            raise ValueError(
                f"custom noise: log_density {self._label} raised {name}: {err}"
            ) from err

    def _log_prob_std(self, y):
        return self._call(y)

    def _icdf_lower_std(self, u):
        return np.interp(u, self._cdf, self._y)

    def _icdf_upper_std(self, q):
        # Quantile at 1 - q, interpolated on the survival function (decreasing: flip it).
        return np.interp(q, self._sf[::-1], self._y[::-1])

    def quantile_logodds(self, t):
        t = np.asarray(t, dtype=np.float64)
        q = expit(-np.abs(t))
        return self.alpha * np.where(t <= 0, self._icdf_lower_std(q), self._icdf_upper_std(q))

    def _sample_std(self, shape, device, dtype, generator):
        u = torch.rand(shape, device=device, dtype=dtype, generator=generator).reshape(-1)
        cdf, y, guide = self._tables(u.device, dtype)
        # Linear interpolation of the tabulated inverse CDF (gathers by index_select, several
        # times faster than indexing on CPU; the values are those of the plain formula).
        idx = _searchsorted(cdf, u, guide).clamp_(1, len(self._y) - 1)
        before = idx - 1
        c0, c1 = cdf.index_select(0, before), cdf.index_select(0, idx)
        w = u.sub_(c0).div_(c1.sub_(c0).clamp_min_(1e-300)).clamp_(0, 1)
        y0 = y.index_select(0, before)
        return y.index_select(0, idx).sub_(y0).mul_(w).add_(y0).view(shape)

    def _tables(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """The CDF and grid as tensors on `device` (made once per device and dtype, so that no
        draw copies them from the host), and on CPU the search guide of `_searchsorted`."""
        key = (device, dtype)
        if key not in self._device_tables:
            cdf = torch.as_tensor(self._cdf, dtype=dtype).to(device)
            y = torch.as_tensor(self._y, dtype=dtype).to(device)
            guide = _search_guide(cdf) if device.type == "cpu" else None
            self._device_tables[key] = (cdf, y, guide)
        return self._device_tables[key]

    def _rms_std(self):
        return self._rms


_GUIDE_BUCKETS = 1 << 16  # a power of two, so that u * buckets and b / buckets are exact
_GUIDE_STEPS = 3


def _search_guide(cdf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For u in bucket b = [b / K, (b + 1) / K), searchsorted(cdf, u) lies in
    [first[b], first[b + 1]] with first[b] = searchsorted(cdf, b / K). Returns first, the
    buckets wider than _GUIDE_STEPS (the tails, ~1% of the mass) and cdf padded with inf."""
    grid = torch.arange(_GUIDE_BUCKETS + 1, dtype=cdf.dtype) / _GUIDE_BUCKETS
    first = torch.searchsorted(cdf, grid)
    wide = (first[1:] - first[:-1]) > _GUIDE_STEPS
    return first, wide, torch.cat([cdf, cdf.new_full((1,), math.inf)])


def _searchsorted(cdf: torch.Tensor, u: torch.Tensor, guide) -> torch.Tensor:
    """torch.searchsorted(cdf, u) (u in [0, 1)), the same indices. On CPU torch's binary
    search costs ~110 ns per value on a 2^17 table; here a guide table, a few vectorised steps
    and a binary search for the ~1% of draws that fall in wide buckets cost ~20 ns."""
    if guide is None:
        return torch.searchsorted(cdf, u)
    first, wide, padded = guide
    bucket = u.mul(_GUIDE_BUCKETS).long()
    idx = first.index_select(0, bucket)
    for _ in range(_GUIDE_STEPS):  # count the cdf values below u, one step at a time
        idx.add_(padded.index_select(0, idx) < u)
    rest = torch.from_numpy(np.flatnonzero(wide.index_select(0, bucket).numpy()))
    if rest.numel():
        idx[rest] = torch.searchsorted(cdf, u.index_select(0, rest))
    return idx
