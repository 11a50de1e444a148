"""RadiusCurve: never above the engine or the closed forms, look-up semantics, disk cache."""

import math

import numpy as np
import pytest

from unicr_pl.noises import create_noise
from unicr_pl.radius import RadiusCurve, certified_radii
from unicr_pl.radius import closed_forms as cf
from unicr_pl.radius import curve as curve_module
from unicr_pl.radius.curve import default_p_grid
from unicr_pl.radius.exact import ExactConfig, ExactEngine

GRID = default_p_grid(60)


def test_gaussian_curve_matches_cohen_and_never_exceeds_it():
    curve = RadiusCurve(create_noise("gaussian", sigma=0.5), 784, p_grid=GRID, cache_dir=None)
    ref = np.array([cf.cohen_l2(0.5, p) for p in GRID])
    assert np.all(curve.radii[2] <= ref) and np.all(curve.radii[2] >= ref * (1 - 1e-3))
    assert np.all(curve.radii[math.inf] <= ref / 28)


def check_below_the_engine_and_close_to_it(name: str, dim: int) -> None:
    noise = create_noise(name, sigma=1.0, **({"beta": 0.75} if name == "gennormal" else {}))
    curve = RadiusCurve(noise, dim, norms=(1, 2), p_grid=GRID, cache_dir=None)
    for i in (5, 30, 59):
        # The structured-family radius, which the curve tabulates (r.radius is a proven bound).
        exact = {
            r.norm: r.radius_family for r in certified_radii(noise, GRID[i], norms=(1, 2), dim=dim)
        }
        for p in (1.0, 2.0):
            assert curve.radii[p][i] <= exact[p] * (1 + 1e-6)
            assert curve.radii[p][i] >= exact[p] * 0.97


# About a minute each (the curve's cost hardly depends on d). The fast suite checks the same
# at every grid point in tests/test_curve_bounds.py (d = 16 and 64).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["laplace", "gennormal"])
def test_curve_is_below_the_engine_and_close_to_it(name):
    check_below_the_engine_and_close_to_it(name, 784)


def test_any_scale_reads_the_unit_curve_and_stays_below_its_engine(tmp_path):
    """R(alpha X) = alpha R(X): the curve of gaussian(sigma = 0.37) is the alpha = 1 curve times
    alpha (not sigma: alpha = sigma sqrt 2), and still never above the exact engine run at that
    scale (zero tolerance)."""
    curve_module._CURVES.clear()  # a curve held in memory by an earlier test writes no file
    noise = create_noise("gaussian", sigma=0.37)
    grid, norms = GRID[::12], (1.0, 2.0, math.inf)
    curve = RadiusCurve(noise, 16, norms=norms, p_grid=grid, cache_dir=tmp_path)
    unit = RadiusCurve(noise.with_alpha(1.0), 16, norms=norms, p_grid=grid, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("curve-*.npz"))) == 1  # one curve serves both scales
    engine = ExactEngine(noise, ExactConfig())
    exact = [engine.radius(float(p), 1 - float(p), list(norms), 16) for p in grid]
    for p in norms:
        np.testing.assert_array_equal(curve.radii[p], noise.alpha * unit.radii[p])
        np.testing.assert_array_equal(curve.proven[p], noise.alpha * unit.proven[p])
        ref = np.array([e[p][0] for e in exact])
        assert np.all(curve.radii[p] <= ref * (1 + 1e-12)) and np.all(curve.radii[p] >= ref * 0.9)
        assert np.all(curve.proven[p] <= curve.radii[p])


def test_lookup_takes_the_grid_point_at_or_below():
    curve = RadiusCurve(create_noise("gaussian"), 16, p_grid=GRID, cache_dir=None)
    mid = 0.5 * (GRID[10] + GRID[11])
    got = curve.radius([0.3, 0.5, GRID[10], mid, 1.0], norm=2)
    assert got[0] == 0 and got[1] == 0
    assert got[2] == curve.radii[2][10] and got[3] == curve.radii[2][10]
    assert got[4] == curve.radii[2][-1]
    assert np.all(np.diff(curve.radii[2]) >= 0)  # non-decreasing in p_A
    with pytest.raises(ValueError, match="p_a must be finite"):
        curve.radius([1.5], norm=2)
    with pytest.raises(ValueError, match="not in this curve's norms"):
        curve.radius([0.9], norm=3)


def test_cache_round_trip_and_corrupt_entry(tmp_path):
    curve_module._CURVES.clear()  # a curve held in memory by an earlier test writes no file
    noise = create_noise("laplace", sigma=1.0)
    first = RadiusCurve(noise, 64, norms=(1,), p_grid=GRID[:10], cache_dir=tmp_path)
    assert first.cache_path.is_file()
    again = RadiusCurve(noise, 64, norms=(1,), p_grid=GRID[:10], cache_dir=tmp_path)
    np.testing.assert_array_equal(first.radii[1], again.radii[1])
    # sigma only scales the law: the same cached curve of the alpha = 1 law, times alpha.
    other = RadiusCurve(
        create_noise("laplace", sigma=2.0), 64, norms=(1,), p_grid=GRID[:10], cache_dir=tmp_path
    )
    assert other.key() == first.key() and len(list(tmp_path.glob("curve-*.npz"))) == 1
    np.testing.assert_allclose(other.radii[1], 2 * first.radii[1], rtol=1e-15, atol=0)
    first.cache_path.write_bytes(b"not a npz file")
    rebuilt = RadiusCurve(noise, 64, norms=(1,), p_grid=GRID[:10], cache_dir=tmp_path)
    np.testing.assert_allclose(rebuilt.radii[1], first.radii[1])


def test_bad_grids():
    noise = create_noise("gaussian")
    with pytest.raises(ValueError, match="strictly increasing"):
        RadiusCurve(noise, 8, p_grid=[0.9, 0.8], cache_dir=None)
    with pytest.raises(ValueError, match=r"must lie in \(1/2, 1\)"):
        RadiusCurve(noise, 8, p_grid=[0.4, 0.8], cache_dir=None)
