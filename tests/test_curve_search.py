"""The pieces `compute_curve` is built from, each against a value known independently.

`_refined_grid` and `_scale_bounds` are checked on boundary functions whose inverse is known in
closed form (kinks, plateaus, staircases, through a stand-in for the engine's lattice: the
result must never exceed the true a*), `_scale_bounds` also against Cohen's and Yang's
one-coordinate radii and the engine's own root, and the k search on made-up a*(k, p) tables
shared with the engine, so that the curve's k provably cover the engine's.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from tests.test_mutants import gumbel, mirrored_gumbel
from unicr_pl.noises import create_noise
from unicr_pl.radius import curve as curve_module
from unicr_pl.radius.curve import (
    _log_z,
    _refined_grid,
    _scale_bounds,
    compute_curve,
)
from unicr_pl.radius.exact import ExactConfig, ExactEngine, k_grid, refine_grid

GRID = curve_module.default_p_grid(40)
CFG = ExactConfig()
TAKEN_OFF = 1 - CFG.margin - CFG.rtol  # what the curve deducts on top of its interpolation


def test_default_p_grid_is_even_in_phi_inverse_and_ends_at_p_max():
    grid = curve_module.default_p_grid(7, p_max=0.99)
    z = ndtri(grid)
    assert len(grid) == 7 and grid[-1] == pytest.approx(0.99, rel=1e-14)
    np.testing.assert_allclose(np.diff(z), z[0], rtol=1e-12)  # z_1 = dz: the grid skips 1/2
    assert len(curve_module.default_p_grid()) == 200
    assert curve_module.default_p_grid()[-1] == pytest.approx(1 - 1e-6, rel=1e-14)
    # log Phi^-1, clipped inside (1/2, 1) so that the ends stay finite.
    assert np.all(np.isfinite(_log_z(np.array([0.5, 0.4, 1.0]))))
    assert _log_z(np.array([0.9]))[0] == pytest.approx(math.log(ndtri(0.9)), rel=1e-15)


def test_refined_grid_is_exact_in_one_pass_where_log_log_is_linear():
    # p = Phi(2a): log Phi^-1(p) is linear in log a, so every midpoint is predicted exactly and
    # one pass of midpoints ends the refinement.
    a, p, err = _refined_grid(lambda x: float(ndtr(2 * x)), 0.01, 3.0)
    n = curve_module._A_POINTS
    assert len(a) == 2 * n - 1 and np.all(err < 1e-8)
    np.testing.assert_allclose(a[::2], np.geomspace(0.01, 3.0, n), rtol=1e-14)
    np.testing.assert_allclose(np.sqrt(a[:-1:2] * a[2::2]), a[1::2], rtol=1e-14)
    np.testing.assert_array_equal(p, ndtr(2 * a))


def _interpolation_error(a, p, inverse, i: int) -> float:
    """Largest relative error in a of the log-log interpolation inside [a_i, a_i+1]."""
    inside = np.linspace(p[i], p[i + 1], 9)[1:-1]
    true = np.array([inverse(q) for q in inside])
    guessed = np.exp(np.interp(_log_z(inside), _log_z(p), np.log(a)))
    return float(np.abs(np.log(guessed / true)).max())


def _kink(slope: float):
    """Phi^-1 of the boundary p_A: a, then `slope` times as steep beyond a = 1; its inverse."""
    return (lambda x: x if x < 1 else 1 + slope * (x - 1)), (
        lambda z: z if z < 1 else 1 + (z - 1) / slope
    )


def test_refined_grid_error_bounds_the_interpolation_across_a_kink():
    # p = Phi(g(a)) with g linear, then 0.3x as steep beyond a = 1: the kink is refined until
    # every interval passes, and twice each interval's recorded error (at least the tolerance)
    # bounds the true error of interpolating inside it: the bound `_scale_bounds` relies on.
    g, g_inverse = _kink(0.3)
    a, p, err = _refined_grid(lambda x: float(ndtr(g(x))), 0.01, 3.0)
    assert 2 * curve_module._A_POINTS - 1 < len(a) < curve_module._MAX_A_POINTS
    assert np.all(err <= curve_module._INTERP_RTOL)
    for i in range(len(a) - 1):
        bound = max(2 * err[i], curve_module._INTERP_RTOL)
        assert _interpolation_error(a, p, lambda q: g_inverse(ndtri(q)), i) <= bound, a[i]
    # The refinement went where the kink is: the interval holding a = 1 is narrow.
    j = np.searchsorted(a, 1.0) - 1
    assert a[j + 1] / a[j] < 1.01


def test_refined_grid_refines_only_intervals_that_hold_a_target():
    # The same kink, looked up only at p_A below it (a < 0.6) or only above it (a > 1.6):
    # only the intervals holding a target are refined, those still to within the bound.
    g, g_inverse = _kink(0.3)
    for lo, hi in ((0.05, 0.6), (1.6, 2.5)):
        targets = ndtr(np.linspace(g(lo), g(hi), 30))
        a, p, err = _refined_grid(lambda x: float(ndtr(g(x))), 0.01, 3.0, targets)
        held = (np.searchsorted(targets, p[:-1]) < np.searchsorted(targets, p[1:])) & (
            p[:-1] <= targets[-1]
        )
        assert held.any() and np.all(err[held] <= curve_module._INTERP_RTOL)
        for i in np.flatnonzero(held):
            bound = max(2 * err[i], curve_module._INTERP_RTOL)
            assert _interpolation_error(a, p, lambda q: g_inverse(ndtri(q)), i) <= bound
        # Nothing was spent on the kink, away from every target (refined to 1% without
        # targets), and fewer points than without targets.
        j = np.searchsorted(a, 1.0) - 1
        assert a[j + 1] / a[j] > 1.05
        assert len(a) < len(_refined_grid(lambda x: float(ndtr(g(x))), 0.01, 3.0)[0])


def test_refined_grid_flat_parts_cost_nothing_and_the_cap_holds():
    # Flat p (the boundary p_A does not move with a): error 0, never refined.
    a, p, err = _refined_grid(lambda x: float(ndtr(max(x, 1.0))), 0.01, 3.0)
    assert np.all(err[a[1:] < 0.5] == 0) and np.sum(a < 0.5) <= 2 * np.sum(
        np.geomspace(0.01, 3.0, curve_module._A_POINTS) < 0.5
    )
    # A staircase never verifies: refinement stops at the cap, the unverified intervals keep
    # their error above the tolerance (the caller then falls back to the grid point below).
    a, p, err = _refined_grid(lambda x: float(ndtr(math.floor(8 * x) / 8 + 1e-3 * x)), 0.05, 3.0)
    assert len(a) == curve_module._MAX_A_POINTS and np.any(err > curve_module._INTERP_RTOL)
    # A boundary p_A that dips is returned as its running maximum (monotone for the inverse).
    a, p, err = _refined_grid(lambda x: float(ndtr(x) - (0.01 if 1 < x < 1.1 else 0)), 0.05, 3.0)
    assert np.all(np.diff(p) >= 0) and np.any(np.diff(p) == 0)


def _plateau():
    """Flat on [1, 1.3) (an atom of the log-ratio's law), then rising again."""
    return (lambda x: x if x < 1 else (1.0 if x < 1.3 else x - 0.3)), (
        lambda z: z if z <= 1 else z + 0.3
    )


def _stairs():
    """Steps of one log-odds cell, relative in a: what a bounded-support law's lattice gives."""
    step = 2 * curve_module._T_MAX / curve_module._CELLS

    def g(x):
        return (1 + step) ** math.floor(math.log(x) / math.log1p(step))

    return g, lambda z: (1 + step) ** math.ceil(math.log(z) / math.log1p(step) - 1e-12)


class _Law:
    def __init__(self, a):
        self.a = a

    def values_and_mass(self):
        return self.a, None


CASES = {"kink-0.3": _kink(0.3), "kink-3": _kink(3.0), "plateau": _plateau(), "stairs": _stairs()}


def _stand_in(monkeypatch, g, stairs: bool = False, calls: list | None = None):
    """An engine whose lattice gives the boundary p_A = Phi(g(a)) for a shift a (any k);
    `calls` receives each a evaluated."""

    def boundary(values, mass):
        if calls is not None:
            calls.append(values)
        return float(ndtr(g(values)))

    table = SimpleNamespace(
        single_law=lambda a: (a, None),
        law=lambda a, k: _Law(a),
        z_values=lambda a: np.array([-np.inf if stairs else 0.0]),  # -inf: bounded support
    )
    monkeypatch.setattr(curve_module, "boundary_p_a", boundary)
    engine = SimpleNamespace(table=table, noise=SimpleNamespace(symmetric=True), _scale=1.0)
    engine.config = CFG
    return engine


@pytest.mark.parametrize(
    ("case", "cap"),
    [("kink-0.3", 40), ("kink-0.3", 160), ("kink-3", 60), ("plateau", 60), ("plateau", 160)]
    + [("stairs", 60), ("stairs", 160)],
)
def test_scales_never_exceed_the_true_inverse(monkeypatch, case, cap):
    # _scale_bounds on a boundary p_A = Phi(g(a)) whose inverse is known exactly, through a
    # stand-in for the engine's lattice: at every p_A of a dense grid its a*, less the engine's
    # margin, is at most the true one. The cap on the a-grid (40, 60: reached before every
    # interval is verified) exercises the fallbacks; the staircase needs its own deduction.
    g, g_inverse = CASES[case]
    engine = _stand_in(monkeypatch, g, stairs=case == "stairs")
    monkeypatch.setattr(curve_module, "_MAX_A_POINTS", cap)
    grid = curve_module.default_p_grid(400, p_max=0.999)
    scales, upper = _scale_bounds(engine, 1, grid, 1.0)
    true = np.array([g_inverse(z) for z in ndtri(grid)])
    assert np.all(scales <= true * TAKEN_OFF * (1 + 1e-12)), grid[scales > true * TAKEN_OFF]
    # The upper bound holds the engine's value (at most the true root less its margin).
    high = true * (1 - CFG.margin)
    assert np.all(upper >= high * (1 - 1e-12)), grid[upper < high * (1 - 1e-12)]
    if cap == 160:  # the default cap: close to the truth, not vacuously low
        assert np.all(scales >= true * 0.95)


def test_bounds_hold_whatever_the_starting_guess(monkeypatch):
    # The bracket of a is grown from the guess, so where the grid of a starts relative to the
    # looked-up p_A depends on it: over guesses spread over a factor 2 in small steps (and far
    # off), some put a p_A in the grid's first interval, and both bounds hold the true a*
    # everywhere (the lower one below it, the upper one at or above the engine's value).
    g, g_inverse = CASES["kink-0.3"]
    grid = curve_module.default_p_grid(400, p_max=0.999)
    true = np.array([g_inverse(z) for z in ndtri(grid)])
    for guess in [1e-3, 1e3, *np.geomspace(0.5, 1.0, 8, endpoint=False)]:
        lower, upper = _scale_bounds(_stand_in(monkeypatch, g), 1, grid, float(guess))
        assert np.all(lower <= true * TAKEN_OFF * (1 + 1e-12)), guess
        assert np.all(upper >= true * (1 - CFG.margin) * (1 - 1e-12)), guess


def test_bounds_beyond_the_search_limit(monkeypatch):
    # A boundary p_A that stops rising at Phi(2): p_A above it is reached by no a up to the
    # search's limit. There a* lies beyond every a searched: the lower bound is at least the
    # bound at every p_A reached, the upper bound is infinite, and neither is NaN.
    reach = float(ndtr(2.0))
    grid = curve_module.default_p_grid(40, p_max=0.99)
    lower, upper = _scale_bounds(_stand_in(monkeypatch, lambda x: min(x, 2.0)), 1, grid, 1.0)
    beyond = grid > reach
    assert beyond.any() and not beyond.all()
    assert np.all(np.isfinite(lower)) and not np.any(np.isnan(upper))
    assert np.all(lower[beyond] >= lower[~beyond].max()) and np.all(upper[beyond] == np.inf)
    true = ndtri(grid[~beyond])
    assert np.all(lower[~beyond] <= true * TAKEN_OFF * (1 + 1e-12))
    assert np.all(upper[~beyond] >= true * (1 - CFG.margin) * (1 - 1e-12))


def test_scale_bounds_refines_the_a_grid_only_where_a_looked_up_p_a_lies(monkeypatch):
    # _scale_bounds evaluates the boundary p_A once per a, and refines its grid of a only in
    # intervals holding a p_A it looks up: above the last one, only points of the first,
    # geometric grid between the bracket's ends are evaluated, never a midpoint.
    calls: list[float] = []
    engine = _stand_in(monkeypatch, lambda x: x, calls=calls)
    grid = curve_module.default_p_grid(40, p_max=float(ndtr(1.3)))  # a* = 1.3 at the top
    _scale_bounds(engine, 1, grid, 0.3)  # doubling from 0.3 overshoots a* = 1.3
    assert len(calls) == len(set(calls))
    first = np.geomspace(min(calls), max(calls), curve_module._A_POINTS)
    top = first[np.argmax(ndtr(first) > grid[-1])]  # the first grid point above the last p_A
    above = [a for a in calls if a > top]
    assert above and set(above) <= set(first)


@pytest.mark.parametrize("k", [1, 4])
def test_gaussian_scales_are_cohen_less_the_documented_deductions(k):
    # Gaussian noise, binary p_B = 1 - p_A: a*(k) = sigma Phi^-1(p_A) / sqrt(k). The log-log
    # interpolation is exact here, so the curve takes off exactly its floor tolerance, the
    # engine's margin and its root tolerance: no more, no less (to the lattice's 1e-5).
    engine = ExactEngine(create_noise("gaussian", sigma=0.7), CFG)
    scales, upper = _scale_bounds(engine, k, GRID, engine._initial_scale(k, 0.9, 0.1))
    ratio = scales * math.sqrt(k) / (0.7 * ndtri(GRID))
    want = TAKEN_OFF * (1 - curve_module._INTERP_RTOL)
    np.testing.assert_allclose(ratio, want, rtol=1e-5, atol=0)
    # The upper bound adds the same tolerance and takes off the margin only (or is the grid
    # point above, where that is closer): it holds Cohen's a* less the engine's margin.
    ratio = upper * math.sqrt(k) / (0.7 * ndtri(GRID))
    assert np.all(ratio >= (1 - CFG.margin) * (1 - 1e-5))
    assert np.all(ratio <= (1 - CFG.margin) * (1 + curve_module._INTERP_RTOL) * (1 + 1e-5))


def test_nothing_is_claimed_below_the_first_verified_point():
    # p_A = 1/2 + 1e-14: the boundary p_A of every a the search may try (down to 1e-12 sigma)
    # lies above it, so no a is verified there: 0, not a guess. True a* is 2.5e-14 sigma; the
    # smallest a tried is still an upper bound of it.
    engine = ExactEngine(create_noise("gaussian", sigma=0.7), CFG)
    grid = np.array([0.5 + 1e-14, 0.6, 0.9])
    scales, upper = _scale_bounds(engine, 1, grid, engine._initial_scale(1, 0.9, 0.1))
    assert 0 <= scales[0] <= 0.7 * ndtri(grid[0])
    assert upper[0] >= 0.7 * ndtri(grid[0]) * (1 - CFG.margin)
    ratio = scales[1:] / (0.7 * ndtri(grid[1:]))
    np.testing.assert_allclose(ratio, TAKEN_OFF * (1 - curve_module._INTERP_RTOL), rtol=1e-5)


def test_uniform_scales_stay_below_the_engine_and_close_to_yang():
    # Uniform noise on [-w, w], one coordinate: a*(1) = 2 w (p_A - 1/2) (Yang et al.). The
    # boundary p_A is a staircase on the lattice, so the step is taken off as well; the result
    # is never above the engine's own root less its margin, at every grid point.
    sigma = 0.7
    w = sigma * math.sqrt(3)
    engine = ExactEngine(create_noise("uniform", sigma=sigma), CFG)
    scales, upper = _scale_bounds(engine, 1, GRID, engine._initial_scale(1, 0.9, 0.1))
    exact = np.array([engine.boundary_scale(1, float(q), 1 - float(q)) for q in GRID])
    assert np.all(scales <= exact * (1 - CFG.margin))
    assert np.all(upper >= exact * (1 - CFG.margin))
    ratio = scales / (2 * w * (GRID - 0.5))
    assert np.all(ratio >= 0.995) and np.all(ratio <= 1)


def test_asymmetric_scales_take_the_worse_sign_and_stay_below_the_engine():
    # A Gumbel-shaped density and its mirror image: one coordinate moved by +a or -a gives
    # different boundaries; the curve must take the worse of the two (the smaller a*), for
    # either orientation, and stay below the engine's root of that sign less its margin.
    for fn in (gumbel, mirrored_gumbel):
        engine = ExactEngine(create_noise("custom", log_density=fn, alpha=1.0), CFG)
        grid = GRID[::8]
        scales, upper = _scale_bounds(engine, 1, grid, engine._initial_scale(1, 0.9, 0.1))
        per_sign = np.array(
            [
                [engine.boundary_scale(1, float(q), 1 - float(q), sign=s) for q in grid]
                for s in (1.0, -1.0)
            ]
        )
        assert np.all(np.abs(per_sign[0] / per_sign[1] - 1) > 1e-2)  # the signs do differ
        worse = per_sign.min(axis=0) * (1 - CFG.margin)
        assert np.all(scales <= worse) and np.all(scales >= worse * 0.99)
        assert np.all(upper >= worse) and np.all(upper <= worse * 1.01)


def _dip(k: int, at: int) -> float:
    return 0.1 * math.exp(-(((k - at) / 3) ** 2))


# Made-up l2 radii R(k, p) / Phi^-1(p): a smooth minimum in log k around `centre` and a narrow
# dip between coarse k that only a refinement around the right coarse k finds.
SHAPES = {
    # Minimum between the coarse k = 32 and 64, which the curve's table ranks within 0.05% of
    # each other and the engine's (k = 64 is 0.2% lower there) the other way round: the dip
    # at 101 is refined only around 64. The bounds of each a*(k) (BAND) rank them both as
    # possible minimisers.
    "slack": lambda k, p: 1 + (math.log(k / 45) / 4) ** 2 - _dip(k, 101),
    # The coarse minimiser 64 has a higher left neighbour than right one: a "flat" test that
    # lets the two differences cancel would skip it and miss the dip at 45.
    "spread": lambda k, p: 1 + (math.log(k / 80) / 4) ** 2 - _dip(k, 45),
    # The minimiser moves with p_A: near k = 10 below p_A = 0.9, the "spread" shape above it.
    # Each p_A must be refined around its own minimiser, not around one for all.
    "moving": lambda k, p: np.where(
        p < 0.9, 1 + (math.log(k / 10) / 4) ** 2, 1 + (math.log(k / 80) / 4) ** 2 - _dip(k, 45)
    ),
}
ENGINE_BUMP = {"slack": {64: 0.998}}
BAND = 3e-3  # the curve's bounds of each a*(k, p): the engine's value lies within them


def _fake_table(shape, bump: dict[int, float] | None = None):
    """a*(k, p) = Phi^-1(p) R(k, p) / sqrt(k), each k's value times bump.get(k, 1)."""
    bump = bump or {}

    def scale(k: int, p: np.ndarray) -> np.ndarray:
        return ndtri(p) * shape(k, p) * bump.get(k, 1.0) / math.sqrt(k)

    return scale


def _fake_curve(monkeypatch, scale, norms, dim=120, band=0.0):
    """compute_curve on the made-up table, each a*(k, p) known to within +-band (relative);
    returns the curve and {k solved: its guess}."""
    solved: dict[int, float] = {}

    def fake(engine, k, p_grid, guess):
        solved[k] = guess
        value = scale(k, p_grid)
        return value * (1 - band), value * (1 + band)

    monkeypatch.setattr(curve_module, "_scale_bounds", fake)
    return compute_curve(create_noise("gaussian", sigma=1.0), dim, norms, GRID), solved


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("norms", [[1.0, 2.0, math.inf], [math.inf, 2.0]])
def test_curve_searches_every_k_the_engine_refines(monkeypatch, shape, norms):
    # The engine refines around its own coarse minimiser at each p_A; the curve, built once
    # for every p_A, must search a superset of those k, or it sits above the engine (7% here).
    curve, _ = _fake_curve(monkeypatch, _fake_table(SHAPES[shape]), norms, band=BAND)
    engine = ExactEngine(create_noise("gaussian", sigma=1.0), CFG)
    engine_table = _fake_table(SHAPES[shape], ENGINE_BUMP.get(shape))

    def scales(ks, p_a, p_b, cache):
        for k in ks:
            cache.setdefault(k, float(engine_table(k, np.array([p_a]))[0]))

    monkeypatch.setattr(engine, "scales", scales)
    for i in range(0, len(GRID), 3):
        exact = engine.radius(float(GRID[i]), 1 - float(GRID[i]), norms, 120)
        for p in norms:
            assert curve[p][i] <= exact[p][0] * (1 + 1e-12), (p, GRID[i])


def test_curve_refines_only_the_coarse_k_that_could_be_the_engines_minimiser(monkeypatch):
    # R(k) falls with k (minimum at k = d), 1.6% between the last two coarse k. Known to
    # +-0.01%, only k = d can be the engine's coarse minimiser: only its interval is refined.
    # Known to +-1%, k = 64 could be too, and the interval around it is refined as well.
    coarse = k_grid(120, CFG.k_ratio, CFG.dense_k)
    falling = _fake_table(lambda k, p: 1 + 0.5 / math.sqrt(k))
    _, solved = _fake_curve(monkeypatch, falling, [2.0], band=1e-4)
    assert set(solved) == set(coarse) | set(refine_grid(64, 120, CFG.refine_ratio))
    _, solved = _fake_curve(monkeypatch, falling, [2.0], band=1e-2)
    around_64 = set(refine_grid(32, 120, CFG.refine_ratio))
    assert set(solved) == set(coarse) | around_64 | set(refine_grid(64, 120, CFG.refine_ratio))


def test_curve_solves_no_k_the_engine_does_not_where_the_bounds_single_out_its_minimiser(
    monkeypatch,
):
    # R(k) with its minimum at the coarse k = 16, at least 1% below its coarse neighbours and
    # known to +-0.01%: the engine refines between the coarse k on either side at every p_A,
    # and the curve solves exactly the k the engine solves at some p_A, none beyond.
    shape = _fake_table(lambda k, p: 1 + (math.log(k / 20) / 4) ** 2)
    _, solved = _fake_curve(monkeypatch, shape, [1.0, 2.0], band=1e-4)
    engine = ExactEngine(create_noise("gaussian", sigma=1.0), CFG)
    wanted: set[int] = set()

    def scales(ks, p_a, p_b, cache):
        wanted.update(ks)
        for k in ks:
            cache.setdefault(k, float(shape(k, np.array([p_a]))[0]))

    monkeypatch.setattr(engine, "scales", scales)
    for q in GRID:
        engine.radius(float(q), 1 - float(q), [1.0, 2.0], 120)
    assert wanted > set(k_grid(120, CFG.k_ratio, CFG.dense_k))  # it did refine
    assert set(solved) == wanted


def test_curve_skips_flat_k_and_l_inf_and_warm_starts(monkeypatch):
    coarse = k_grid(120, CFG.k_ratio, CFG.dense_k)
    mid = float(GRID[len(GRID) // 2])
    engine = ExactEngine(create_noise("gaussian", sigma=1.0), CFG)
    # l_inf alone is never refined (k = d is its minimiser), whatever R(k) looks like.
    table = _fake_table(SHAPES["slack"])
    curve, solved = _fake_curve(monkeypatch, table, [math.inf])
    assert sorted(solved) == coarse
    np.testing.assert_array_equal(curve[math.inf], table(120, GRID))
    # Each k starts from the nearest solved k (in log k), scaled as k^-1/2 (Gaussian's law).
    assert solved[1] == engine._initial_scale(1, mid, 1 - mid)
    for k in coarse[1:]:
        near = min((j for j in coarse if j < k), key=lambda j: abs(math.log(j / k)))
        want = table(near, np.array([mid]))[0] * math.sqrt(near / k)
        assert solved[k] == pytest.approx(want, rel=1e-12), k
    # R(k) the same for every k (Gaussian noise in l2): nothing to refine between coarse k
    # (only next to the ends, which have a single neighbour to compare with).
    flat = _fake_table(lambda k, p: 1.0)
    curve, solved = _fake_curve(monkeypatch, flat, [2.0])
    assert set(solved) == set(coarse) | set(refine_grid(coarse[-2], 120, CFG.refine_ratio))
    # A k whose nearest solved value is 0 or inf starts from the normal approximation again.
    for dead_value in (0.0, math.inf):

        def dead(k, p, dead_value=dead_value):
            return np.full(p.shape, dead_value) if k == 1 else flat(k, p)

        _, solved = _fake_curve(monkeypatch, dead, [2.0])
        assert solved[2] == engine._initial_scale(2, mid, 1 - mid), dead_value
    # Every start is finite and positive (from 0 or inf the bracket never grows), also where
    # only one bound is: nothing verified at the middle p_A (lower bound 0, upper bound the
    # grid point above) or nothing bounding a* from above (the search's limit reached).
    for partial in (lambda v: (0 * v, v), lambda v: (v, v + math.inf)):
        solved = {}

        def one_sided(engine, k, p_grid, guess, partial=partial, solved=solved):
            solved[k] = guess
            value = flat(k, p_grid)
            return partial(value) if k == 1 else (value, value)

        monkeypatch.setattr(curve_module, "_scale_bounds", one_sided)
        compute_curve(create_noise("gaussian", sigma=1.0), 120, [2.0], GRID)
        assert all(0 < guess < math.inf for guess in solved.values()), solved
