"""`RadiusCurve`: the binary p_A -> R curve of a (noise, d), computed once, cached on disk.

The radius depends only on (noise, p_A, p_B, norm, d), never on the input, so certifying a
dataset needs one curve, not one optimisation per image. For each k of the structured search
the boundary p_A of a perturbation a (1, ..., 1, 0, ...) is monotone in a; it is evaluated on a
geometric grid of a and inverted by monotone interpolation. A look-up takes the grid value at or
below p_A (R is non-decreasing in p_A), so it never over-states the curve.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

import unicr_pl
from unicr_pl.noises import Noise
from unicr_pl.radius.bounds import BOUNDS_VERSION, proven_curve, proven_radius
from unicr_pl.radius.cache import BoundedLRU, env_limits
from unicr_pl.radius.checks import check_dim, check_norm, lp_norm_of_structured
from unicr_pl.radius.exact import ExactConfig, ExactEngine, k_grid, refine_grid
from unicr_pl.radius.lattice import _CELLS, _T_MAX
from unicr_pl.radius.neyman_pearson import boundary_p_a

ENGINE_VERSION = "exact-9"  # bump when the numerics change: it invalidates cached curves
_A_POINTS = 24
_MAX_A_POINTS = 160
_INTERP_RTOL = 2e-4  # refine the a-grid until interpolation is this close (relative)
_MAX_TOL = 5e-3  # larger interpolation tolerances fall back to the grid point below
# One step of a bounded-support law's staircase, relative in a: at most one log-odds cell.
_STAIR_RTOL = 2 * (2 * _T_MAX / _CELLS)
_K_TIE = 1e-4  # a coarse k is not refined where R varies less than this around it


def default_p_grid(points: int = 200, p_max: float = 1 - 1e-6) -> np.ndarray:
    """Grid of p_A in (1/2, p_max], evenly spaced in Phi^-1(p_A), where Cohen's R is linear."""
    z = np.linspace(0.0, float(ndtri(p_max)), points + 1)[1:]
    return ndtr(z)


def _log_z(p: np.ndarray) -> np.ndarray:
    return np.log(ndtri(np.clip(p, 0.5 + 1e-16, 1 - 1e-16)))


def _refined_grid(pi, a_lo: float, a_hi: float, targets: np.ndarray | None = None):
    """Evaluates the boundary p_A `pi` on a grid of a, refined (up to _MAX_A_POINTS) until
    log-log interpolation predicts each interval's midpoint to _INTERP_RTOL in a.

    With `targets` (the ascending p_A that will be looked up), only intervals [p_i, p_i+1)
    holding a target are refined: the others are never interpolated in, and past the last
    target p(a) saturates at 1 in float64, where no interpolation converges.

    Returns (a, p, err): `err[i]` is the relative error in a of the interpolation at the
    midpoint of the interval that [a_i, a_i+1] was split from (0 where p is flat, inf where
    it was never checked); the caller turns it into a tolerance or falls back to a_i, which
    monotonicity makes a lower bound.
    """
    a = np.geomspace(a_lo, a_hi, _A_POINTS)
    p = np.array([pi(x) for x in a])
    err = np.full(len(a) - 1, np.inf)
    while len(a) < _MAX_A_POINTS:
        wanted = err > _INTERP_RTOL
        if targets is not None:
            mono = np.maximum.accumulate(p)
            held = np.searchsorted(targets, mono, side="left")  # first target >= p_i
            wanted &= held[:-1] < held[1:]  # some target in [p_i, p_i+1)
        if not wanted.any():
            break
        todo = np.flatnonzero(wanted)[: _MAX_A_POINTS - len(a)]
        am = np.sqrt(a[todo] * a[todo + 1])
        pm = np.array([pi(x) for x in am])
        lz0, lzm, lz1 = _log_z(p[todo]), _log_z(pm), _log_z(p[todo + 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (lzm - lz0) / (lz1 - lz0)
        predicted = np.log(a[todo]) + t * (np.log(a[todo + 1]) - np.log(a[todo]))
        new = np.abs(predicted - np.log(am))
        new[~np.isfinite(new)] = np.inf
        new[(pm == p[todo]) & (pm == p[todo + 1])] = 0.0  # flat p: the smallest a is used
        # Insert the midpoints; both halves inherit the parent's error, an over-estimate of
        # theirs where the curve is smooth.
        a = np.insert(a, todo + 1, am)
        p = np.insert(p, todo + 1, pm)
        err = np.insert(err, todo + 1, new)
        err[todo + np.arange(len(todo))] = new
    return a, np.maximum.accumulate(p), err


def _scale_bounds(
    engine: ExactEngine, k: int, p_grid: np.ndarray, guess: float
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) bounds of the engine's a*(k, p) for every p in p_grid, from the boundary
    p_A evaluated on a grid of a.

    The lower bound is the interpolated a less a tolerance, or the grid point below it where the
    interpolation could not be verified closely enough, so it never exceeds the engine's a*(k)
    (which takes the same law's root to ExactConfig.rtol, then its margin). The upper bound is
    the interpolated a plus the same tolerance, or the grid point above: the engine's root lies
    between the two, which is what lets `compute_curve` rank the k as the engine would.
    """
    signs = (1.0,) if engine.noise.symmetric else (1.0, -1.0)
    # Bounded support: the mass of L at -inf grows one cell at a time, so p(a) is a staircase
    # that interpolation between steps can overshoot by one step.
    stairs = bool(np.isneginf(engine.table.z_values(guess)).any())
    lower = np.full(p_grid.shape, np.inf)
    upper = np.full(p_grid.shape, np.inf)
    for sign in signs:
        # The bracket's ends (and its start, reached from both sides) are grid points too.
        known: dict[float, float] = {}

        def pi(a: float, sign: float = sign, known: dict = known) -> float:
            if a not in known:
                if k == 1:
                    values, mass = engine.table.single_law(sign * a)
                else:
                    values, mass = engine.table.law(sign * a, k).values_and_mass()
                known[a] = boundary_p_a(values, mass)
            return known[a]

        p_lo, p_hi = float(p_grid[0]), float(p_grid[-1])
        a_hi = guess
        while pi(a_hi) < p_hi and a_hi < 1e12 * engine._scale:
            a_hi *= 2
        a_lo = guess
        while pi(a_lo) > p_lo and a_lo > 1e-12 * engine._scale:
            a_lo /= 2
        a, p, err = _refined_grid(pi, a_lo, a_hi, p_grid)
        # Interpolate log a against log Phi^-1(p): exactly linear for Gaussian noise, smooth
        # otherwise. Where the boundary p_A is flat (p does not grow), the smallest a is kept.
        log_z_unique, first = np.unique(_log_z(p), return_index=True)
        scales = np.exp(np.interp(_log_z(p_grid), log_z_unique, np.log(a[first])))
        # The interval holding each p: p_j <= p < p_j+1, so a_j <= a* <= a_j+1 (monotone p).
        j = np.clip(np.searchsorted(p, p_grid, side="right") - 1, 0, len(a) - 2)
        # A single kink inside an interval puts its midpoint at least half as far off the
        # chord as the kink itself, so twice the midpoint error bounds the interpolation's.
        tol = np.maximum(2 * err[j], _INTERP_RTOL)
        if stairs:
            tol = tol + _STAIR_RTOL
        trusted = tol <= _MAX_TOL
        lo = np.where(trusted, np.maximum(scales * (1 - tol), a[j]), a[j])
        hi = np.where(trusted, np.minimum(scales * (1 + tol), a[j + 1]), a[j + 1])
        lo[p_grid > p[-1]] = a_hi  # beyond the last point: the last a is still inside
        hi[p_grid >= p[-1]] = np.inf  # ... and nothing bounds a* from above
        lo[p_grid < p[0]] = 0.0  # below the first point nothing is verified
        hi[p_grid < p[0]] = a[0]
        lower, upper = np.minimum(lower, lo), np.minimum(upper, hi)
    # The engine's margin and root tolerance are taken off as well: the curve stays below it.
    # Its root is at most the law's own, so only the margin comes off the upper bound.
    return lower * (1 - engine.config.margin - engine.config.rtol), upper * (
        1 - engine.config.margin
    )


def compute_curve(
    noise: Noise, dim: int, norms: list[float], p_grid: np.ndarray
) -> dict[float, np.ndarray]:
    """R(p) for each norm over p_grid (binary case), min over the structured k-grid.

    The k searched are a superset of the engine's at every p (its coarse grid, refined around
    every coarse k that could be its minimiser), so the curve never exceeds the engine where
    the radius is not unimodal in k (Laplace-type atoms).
    """
    engine = ExactEngine(noise, ExactConfig())
    cfg = engine.config
    mid = len(p_grid) // 2
    scales: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # k -> (lower, upper) a*(k, p)

    def solve(ks: set[int]) -> None:
        for k in sorted(ks - scales.keys()):
            near = min(scales, key=lambda j: abs(math.log(j / k)), default=None)
            if near is None or not 0 < scales[near][0][mid] < math.inf:
                guess = engine._initial_scale(k, float(p_grid[mid]), 1 - float(p_grid[mid]))
            else:
                guess = float(scales[near][0][mid]) * math.sqrt(near / k)
            scales[k] = _scale_bounds(engine, k, p_grid, guess)

    def values(k: int, p: float, which: int = 0) -> np.ndarray:
        return np.array([lp_norm_of_structured(a, k, p) for a in scales[k][which]])

    coarse = k_grid(dim, cfg.k_ratio, cfg.dense_k)
    solve(set(coarse))
    extra: set[int] = set()
    for p in norms:
        if math.isinf(p):  # the engine does not refine l_inf: k = d is its minimiser
            continue
        table = np.stack([values(k, p) for k in coarse])  # [len(coarse), len(p_grid)]
        upper = np.stack([values(k, p, 1) for k in coarse])
        # The engine's coarse minimiser i has R_i <= R_j for every coarse j, and each R lies
        # between its two bounds here: so table[i] <= min_j upper[j].
        near_min = table <= upper.min(axis=0)
        # Where R is flat in k around a coarse k (Gaussian-like: R(k) is the same for every
        # k), the k between its neighbours cannot dip below the curve's own deduction.
        with np.errstate(divide="ignore", invalid="ignore"):  # R = 0 or inf: not flat
            spread = np.abs(table[2:] / table[1:-1] - 1) + np.abs(table[:-2] / table[1:-1] - 1)
        flat = np.pad(spread <= _K_TIE, ((1, 1), (0, 0)), constant_values=False)
        for i in np.flatnonzero((near_min & ~flat).any(axis=1)):
            left, right = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
            extra.update(refine_grid(left, right, cfg.refine_ratio))
    solve(extra)
    return {p: np.min([values(k, p) for k in scales], axis=0) for p in norms}


# Curves read or built in this process, by key: bounded in count and bytes
# ($UNICR_CURVE_CACHE_ITEMS, $UNICR_CURVE_CACHE_MB), read-only arrays.
_CURVES = BoundedLRU(*env_limits("UNICR_CURVE_CACHE", items=32, megabytes=64))


def _checksum(key: str, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the key and every array's name, dtype, shape and bytes."""
    h = hashlib.sha256(key.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _frozen(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {name: np.array(a) for name, a in arrays.items()}
    for a in out.values():
        a.setflags(write=False)  # shared by every RadiusCurve of this key
    return out


def _read_checked(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None unless it holds `key` and its checksum matches
    (a truncated, corrupt or foreign file is never read, only recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key, stored_sum = str(data["key"]), str(data["checksum"])
            arrays = {n: data[n] for n in data.files if n not in ("key", "checksum")}
    except Exception:  # noqa: BLE001 (zip, pickle or header errors: any failure is corruption)
        return None
    if stored_key != key or stored_sum != _checksum(key, arrays):
        return None
    return _frozen(arrays)


def _write_checked(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes arrays with their key and checksum, atomically (a unique temporary, renamed)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as f:
            tmp = Path(f.name)
            np.savez(f, key=key, checksum=_checksum(key, arrays), **arrays)
        tmp.replace(path)  # a crash or a concurrent writer never leaves half a file
    except OSError:  # caching is an optimisation; an unwritable cache only costs time
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class RadiusCurve:
    """Binary p_A -> R curves of one (noise, d) for several norms, with on-disk caching.

    Args:
        noise: the smoothing noise.
        dim: input dimension d.
        norms: l_p orders (numbers or 'inf').
        p_grid: ascending p_A values in (1/2, 1); default: 200 points up to 1 - 1e-6.
        cache_dir: where curves are stored; default $UNICR_CACHE or ~/.cache/unicr-pl.
            None disables caching.
    """

    def __init__(
        self,
        noise: Noise,
        dim: int,
        norms=(1, 2, "inf"),
        p_grid: np.ndarray | None = None,
        cache_dir: str | os.PathLike | None | bool = True,
    ) -> None:
        self.noise = noise
        self.dim = check_dim(dim)
        self.norms = [check_norm(p) for p in norms]
        grid = default_p_grid() if p_grid is None else np.asarray(p_grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0):
            raise ValueError("p_grid must be a non-empty, strictly increasing 1-D array")
        if grid[0] <= 0.5 or grid[-1] >= 1:
            raise ValueError(f"p_grid must lie in (1/2, 1), got [{grid[0]}, {grid[-1]}]")
        self.p_grid = grid
        # Every radius is linear in the noise's scale: one cached curve of the alpha = 1 law
        # serves every sigma (a C-OPT sweep over sigma, I-OPT's sigma steps), times alpha.
        self._unit = noise.with_alpha(1.0)
        if cache_dir is True:
            cache_dir = os.environ.get("UNICR_CACHE", Path.home() / ".cache" / "unicr-pl")
        self._key = self.key()
        self.cache_path = Path(cache_dir) / f"curve-{self._key[:32]}.npz" if cache_dir else None
        unit = self._load() or self._build()  # the alpha = 1 law's arrays, as cached
        self.radii = _frozen({p: noise.alpha * unit[f"r_{p}"] for p in self.norms})
        self.proven = _frozen({p: noise.alpha * unit[f"proven_{p}"] for p in self.norms})

    def key(self) -> str:
        """Hash of everything the curve depends on: the identity of the law at alpha = 1
        (`Noise.identity`, a content hash, never its name), d, the norms, the p_A grid and the
        code version. The scale is applied after the look-up (`Noise.with_alpha`)."""
        spec = {
            "noise": self._unit.identity(),
            "dim": self.dim,
            "norms": [str(p) for p in self.norms],
            "p_grid": hashlib.sha256(self.p_grid.tobytes()).hexdigest(),
            "engine": ENGINE_VERSION,
            "bounds": BOUNDS_VERSION,
            "version": unicr_pl.__version__,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def _load(self) -> dict[str, np.ndarray] | None:
        """The cached arrays (r_<p>, proven_<p>) of the alpha = 1 law, or None."""
        if self.cache_path is None:
            return None
        data = _CURVES.get(self._key) or _read_checked(self.cache_path, self._key)
        wanted = [f"{kind}_{p}" for kind in ("r", "proven") for p in self.norms]
        if data is None or any(name not in data for name in wanted):
            return None  # absent, or written by other code: recomputed, never trusted
        _CURVES.put(self._key, data)
        return data

    def _build(self) -> dict[str, np.ndarray]:
        """Computes the alpha = 1 law's arrays and caches them."""
        radii = compute_curve(self._unit, self.dim, self.norms, self.p_grid)
        proven = proven_curve(self._unit, self.dim, self.p_grid, radii)
        arrays = {f"r_{p}": r for p, r in radii.items()}
        arrays.update({f"proven_{p}": r for p, r in proven.items()})
        if self.cache_path is not None:
            _write_checked(self.cache_path, self._key, arrays)
            _CURVES.put(self._key, _frozen(arrays))
        return arrays

    def radius(self, p_a, norm: float | str = 2) -> np.ndarray:
        """PROVEN certified radius for each p_A (array-like): a sound lower bound over all
        directions (`unicr_pl.radius.bounds`), never above `radius_family`.

        p_A at or below 1/2 gives 0; p_A between grid points takes the grid value below it.
        """
        return self._look_up(self.proven, p_a, norm)

    def radius_family(self, p_a, norm: float | str = 2) -> np.ndarray:
        """Structured-family radius for each p_A (an upper bound of the true radius, the
        figure comparable to the UniCR paper); never above the computed curve."""
        return self._look_up(self.radii, p_a, norm)

    def bound(self, norm: float | str = 2) -> str:
        """Name(s) of the theorem(s) behind `radius` for this norm."""
        p = check_norm(norm)
        return proven_radius(self._unit, self.dim).bound_names([p])[p]

    def _look_up(self, table: dict, p_a, norm) -> np.ndarray:
        p = check_norm(norm)
        if p not in table:
            raise ValueError(f"norm {norm} is not in this curve's norms {self.norms}")
        p_a = np.asarray(p_a, dtype=np.float64)
        if np.any(~np.isfinite(p_a)) or np.any((p_a < 0) | (p_a > 1)):
            raise ValueError("p_a must be finite and in [0, 1]")
        idx = np.searchsorted(self.p_grid, p_a, side="right") - 1  # grid point at or below
        out = np.where(idx >= 0, table[p][np.clip(idx, 0, None)], 0.0)
        return out
