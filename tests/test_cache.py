"""Caches keyed by the law's content: no two laws share a curve or an engine, corrupt files
are rebuilt, memory stays bounded, bad custom densities fail before any curve is written."""

from __future__ import annotations

import gc
import importlib
import json
import math
import sys
import uuid

import numpy as np
import psutil
import pytest
import torch

from unicr_pl.commands import certify_cli as certify
from unicr_pl.noises import create_noise
from unicr_pl.radius import api, certified_radii
from unicr_pl.radius import curve as curve_module
from unicr_pl.radius.cache import BoundedLRU
from unicr_pl.radius.curve import RadiusCurve, default_p_grid

GRID = default_p_grid(4)


@pytest.fixture(autouse=True)
def _empty_memory_caches():
    curve_module._CURVES.clear()
    yield
    curve_module._CURVES.clear()


@pytest.fixture
def fake_compute(monkeypatch):
    """The cache logic under test, without the engine's minutes on a loaded machine: a curve
    made of the law's own log-density at x = 3, so different laws give different curves."""
    calls = []

    def compute(noise, dim, norms, p_grid):
        calls.append(noise)
        value = -float(noise.log_prob(torch.tensor([3.0], dtype=torch.float64))[0])
        return {p: value * p_grid * dim for p in norms}

    monkeypatch.setattr(curve_module, "compute_curve", compute)
    monkeypatch.setattr(curve_module, "proven_curve", lambda n, d, g, family: family)
    return calls


def _density(fn):
    fn.__name__ = "density"  # one name and one scale for two different laws
    return create_noise("custom", log_density=fn, alpha=1.0)


def test_custom_densities_with_one_name_never_share_a_curve(tmp_path, fake_compute):
    gauss = _density(lambda y: -0.5 * y * y)
    lap = _density(lambda y: -y.abs())
    assert gauss.identity() != lap.identity() and repr(gauss) == repr(lap)
    first = RadiusCurve(gauss, 100, norms=(2,), p_grid=GRID, cache_dir=tmp_path).radii[2]
    second = RadiusCurve(lap, 100, norms=(2,), p_grid=GRID, cache_dir=tmp_path).radii[2]
    alone = RadiusCurve(lap, 100, norms=(2,), p_grid=GRID, cache_dir=None).radii[2]
    np.testing.assert_array_equal(second, alone)
    assert not np.allclose(first, second, rtol=1e-2)
    assert len(list(tmp_path.glob("curve-*.npz"))) == 2
    # The same law built twice (a new lambda object) has the same identity: one engine.
    assert _density(lambda y: -y.abs()).identity() == lap.identity()


def test_parameters_at_full_precision_give_different_keys(tmp_path, fake_compute):
    a = create_noise("gennormal", alpha=1.0, beta=1.5)
    b = create_noise("gennormal", alpha=1.0, beta=1.5000001)  # differs in the 8th digit
    assert repr(a) == repr(b)  # the 6-digit repr would collide
    assert a.identity() != b.identity()
    assert a.identity() == create_noise("gennormal", alpha=1.0, beta=1.5).identity()
    keys = {RadiusCurve(n, 10, norms=(2,), p_grid=GRID, cache_dir=None).key() for n in (a, b)}
    assert len(keys) == 2
    assert api._engine(a) is not api._engine(b)
    assert api._engine(a) is api._engine(create_noise("gennormal", alpha=1.0, beta=1.5))


def test_editing_a_density_invalidates_the_cache(tmp_path, monkeypatch, fake_compute):
    # A module name of its own: a second run in one process (mutmut's) must not import the
    # first run's edited module from sys.modules.
    name = f"edited_density_{uuid.uuid4().hex}"
    module = tmp_path / f"{name}.py"
    module.write_text("def f(y):\n    return -0.5 * y * y\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cache = tmp_path / "cache"
    spec = f"{name}:f"
    before = create_noise("custom", log_density=spec, alpha=1.0)
    r_before = RadiusCurve(before, 50, norms=(1,), p_grid=GRID, cache_dir=cache).radii[1]
    module.write_text("def f(y):\n    return -y.abs()\n")
    importlib.reload(sys.modules[name])
    after = create_noise("custom", log_density=spec, alpha=1.0)
    assert after.identity() != before.identity()
    r_after = RadiusCurve(after, 50, norms=(1,), p_grid=GRID, cache_dir=cache).radii[1]
    assert not np.allclose(r_after, r_before)
    assert len(list(cache.glob("curve-*.npz"))) == 2


def test_truncated_corrupt_or_foreign_cache_files_are_rebuilt(tmp_path, fake_compute):
    noise = create_noise("laplace", alpha=1.0)
    curve = RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=tmp_path)
    good, path = curve.radii[2].copy(), curve.cache_path
    payload = path.read_bytes()
    other = RadiusCurve(create_noise("hypsecant"), 20, norms=(2,), p_grid=GRID, cache_dir=None)
    foreign = tmp_path / "foreign.npz"
    curve_module._write_checked(foreign, other.key(), {"r_2.0": other.radii[2]})
    corrupt = dict(np.load(path))
    corrupt["r_2.0"] = corrupt["r_2.0"] * 1.5  # over-states: the stored checksum no longer fits
    for bad in (payload[: len(payload) // 2], foreign.read_bytes(), None):
        if bad is None:
            np.savez(path, **corrupt)
        else:
            path.write_bytes(bad)
        assert curve_module._read_checked(path, curve.key()) is None
        curve_module._CURVES.clear()
        rebuilt = RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=tmp_path)
        np.testing.assert_array_equal(rebuilt.radii[2], good)
        assert fake_compute[-1].identity() == noise.identity()  # alpha = 1: the same law
        assert curve_module._read_checked(path, curve.key()) is not None  # rewritten whole


def test_cached_arrays_are_read_only(tmp_path, fake_compute):
    noise = create_noise("laplace", alpha=1.0)
    RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=tmp_path)
    shared = RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=tmp_path).radii[2]
    assert len(fake_compute) == 1  # the second curve came from memory
    with pytest.raises(ValueError, match="read-only"):
        shared[0] = 1e9


def test_memory_then_disk_then_compute(tmp_path, fake_compute):
    # A curve is read from memory first, then from its file, and computed only when neither
    # holds it; whatever was read or built is kept in memory for the next caller.
    noise, cache = create_noise("laplace", alpha=1.0), tmp_path / "new" / "nested"
    first = RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=cache)
    assert first.noise is noise and first.cache_path.parent == cache  # parents made
    first.cache_path.unlink()
    RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=cache)  # memory, not the file
    assert len(fake_compute) == 1 and not first.cache_path.exists()
    curve_module._CURVES.clear()
    RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=cache)  # built and written
    curve_module._CURVES.clear()
    RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=cache)  # read from the file
    first.cache_path.unlink()
    RadiusCurve(noise, 20, norms=(2,), p_grid=GRID, cache_dir=cache)  # ... and kept in memory
    assert len(fake_compute) == 2


def test_key_covers_every_input_and_nothing_else(fake_compute):
    noise = create_noise("laplace", alpha=1.0)

    def key(**change):
        spec = {"noise": noise, "dim": 20, "norms": (1, 2), "p_grid": GRID, **change}
        return RadiusCurve(cache_dir=None, **spec).key()

    keys = [
        key(),
        key(noise=create_noise("hypsecant", alpha=1.0)),
        key(dim=21),
        key(norms=(1, 3)),
        key(norms=(1,)),
        key(p_grid=GRID[1:]),
    ]
    assert len(set(keys)) == len(keys)
    assert key() == key(noise=create_noise("laplace", alpha=3.0))  # the scale: not a key


def test_default_grid_and_cache_directory(tmp_path, monkeypatch, fake_compute):
    monkeypatch.delenv("UNICR_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    curve = RadiusCurve(create_noise("laplace", alpha=1.0), 20, norms=(1, 2, "inf"))
    np.testing.assert_array_equal(curve.p_grid, default_p_grid())
    assert curve.cache_path.parent == tmp_path / ".cache" / "unicr-pl"
    assert curve.cache_path.is_file()
    # l2 is every look-up's default norm.
    p = [0.6, 0.9]
    np.testing.assert_array_equal(curve.radius(p), curve.radius(p, 2))
    np.testing.assert_array_equal(curve.radius_family(p), curve.radius_family(p, 2))
    assert curve.bound() == curve.bound(2)
    assert curve.radius([0.0, 0.5]).tolist() == [0.0, 0.0]  # [0, 1] is valid: 0 at or below 1/2
    for bad in (math.nan, math.inf, -0.1, 1.1):
        with pytest.raises(ValueError, match=r"^p_a must be finite and in \[0, 1\]$"):
            curve.radius([0.9, bad])


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([], "^p_grid must be a non-empty, strictly increasing 1-D array$"),
        ([[0.6, 0.7]], "^p_grid must be a non-empty, strictly increasing 1-D array$"),
        ([0.6, 0.6, 0.7], "^p_grid must be a non-empty, strictly increasing 1-D array$"),
        ([0.5, 0.7], r"^p_grid must lie in \(1/2, 1\), got \[0.5, 0.7\]$"),
        ([0.6, 0.7, 1.0], r"^p_grid must lie in \(1/2, 1\), got \[0.6, 1.0\]$"),
    ],
)
def test_bad_grids_are_refused_in_one_line(grid, message, fake_compute):
    with pytest.raises(ValueError, match=message):
        RadiusCurve(create_noise("laplace", alpha=1.0), 20, p_grid=grid, cache_dir=None)
    one = RadiusCurve(create_noise("laplace", alpha=1.0), 20, p_grid=[0.7], cache_dir=None)
    assert one.radius([0.7], 2)[0] == one.radii[2][0] > 0  # a single point is a valid grid


class _Planted:
    """Unpickling it leaves a mark: a cache file must never run code when read."""

    unpickled = False

    def __reduce__(self):
        return (_Planted._mark, ())

    @staticmethod
    def _mark():
        _Planted.unpickled = True
        return 0


def test_cache_files_are_written_atomically_and_never_unpickled(tmp_path, monkeypatch):
    path, arrays = tmp_path / "c.npz", {"r_2.0": np.arange(3.0)}
    replaced = []
    original = type(path).replace

    def spy(self, target):
        replaced.append((self, target))
        return original(self, target)

    monkeypatch.setattr(type(path), "replace", spy)
    curve_module._write_checked(path, "k", arrays)
    (tmp,) = replaced
    assert tmp[0].parent == path.parent and tmp[1] == path  # renamed in place: atomic
    assert curve_module._read_checked(path, "k")["r_2.0"].tolist() == [0.0, 1.0, 2.0]

    # A crash at the rename leaves no temporary behind; an unwritable directory costs no error.
    def crash(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(type(path), "replace", crash)
    curve_module._write_checked(tmp_path / "d.npz", "k", arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    curve_module._write_checked(blocker / "sub" / "e.npz", "k", arrays)  # mkdir fails: quiet
    # An object array in a cache file (pickled) is refused without being unpickled.
    evil = tmp_path / "evil.npz"
    planted = np.array([_Planted()], dtype=object)
    np.savez(evil, key="k", checksum="x", r_2=planted)
    assert curve_module._read_checked(evil, "k") is None and not _Planted.unpickled


def test_bounded_lru_evicts_by_count_and_bytes():
    lru = BoundedLRU(max_items=3, max_bytes=10_000)
    for i in range(5):
        lru.put(i, np.zeros(100))  # 800 bytes each
    assert [k for k in range(5) if k in lru] == [2, 3, 4]
    lru.get(2)  # now the most recent: 3 goes next
    lru.put(5, np.zeros(100))
    assert 3 not in lru and 2 in lru
    lru.put("big", np.zeros(1100))  # 8800 bytes: only it and one small entry fit
    assert "big" in lru and lru.total_bytes <= 10_000 and len(lru) == 2
    lru.put("huge", np.zeros(5000))  # larger than the limit alone: still kept, alone
    assert len(lru) == 1 and "huge" in lru
    with pytest.raises(ValueError, match="max_items"):
        BoundedLRU(0, 10)


def test_memory_stays_flat_over_100_new_noises():
    """C-OPT / I-OPT loops build a new noise per step: engines must not pile up."""
    rss = psutil.Process().memory_info
    radii = []
    for i in range(100):
        noise = create_noise("gennormal", sigma=1.0, beta=1.0 + i / 200)
        radii.append(api._engine(noise)._scale)  # ~14 MB of tables each
        if i == 19:
            gc.collect()
            warm = rss().rss
    gc.collect()
    grown = rss().rss - warm
    assert len(api._ENGINES) <= api._ENGINES.max_items
    assert api._ENGINES.total_bytes <= max(api._ENGINES.max_bytes, 20 * 2**20)
    assert grown < 120 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MB"
    assert all(r > 0 for r in radii)


@pytest.mark.parametrize(
    ("fn", "support", "message"),
    [
        (lambda y: 0 * y, None, "not normalisable"),
        (lambda y: 0 * y, (-1.0, 1.0), "not negligible outside its support"),
        (lambda y: -y * y, (-1.0, 1.0), "not negligible outside its support"),
        (lambda y: -y * y + torch.where(y > 3, math.nan, 0.0), None, r"returned nan at y=3"),
        (lambda y: -y * y + torch.where(y > 30, math.inf, 0.0), None, "returned inf"),
        (lambda y: torch.where(y.abs() > 1, math.nan, 0.0), (-1.0, 1.0), "outside the support"),
        (lambda y: torch.tensor(-1.0), None, "must return one value per input"),
        (lambda y: math.sqrt(-1.0), None, "raised ValueError: math domain error"),
        (lambda y: torch.full_like(y, -math.inf), (-1.0, 1.0), "-inf on all of"),
    ],
)
def test_bad_custom_densities_fail_before_any_curve(fn, support, message, tmp_path):
    def build():
        noise = create_noise("custom", log_density=fn, alpha=1.0, support=support)
        RadiusCurve(noise, 10, norms=(2,), p_grid=GRID, cache_dir=tmp_path)

    with pytest.raises(ValueError, match=message):
        build()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_an_asymmetric_custom_density_is_searched_on_both_signs():
    skewed = create_noise("custom", log_density=lambda y: -(y + torch.exp(-y)), alpha=1.0)
    mirror = create_noise("custom", log_density=lambda y: -(-y + torch.exp(y)), alpha=1.0)
    assert not skewed.symmetric and not mirror.symmetric
    a = certified_radii(skewed, 0.9, norms=(2,), dim=16)[0].radius_family
    b = certified_radii(mirror, 0.9, norms=(2,), dim=16)[0].radius_family
    assert math.isclose(a, b, rel_tol=1e-3)


def _radius(*argv):
    return certify.main(["radius", *argv])


def test_many_pa_read_one_curve(tmp_path, monkeypatch, capsys, fake_compute):
    monkeypatch.setenv("UNICR_CACHE", str(tmp_path))
    p_as = ["0.6", "0.75", "0.9", "0.99", "0.5", "1.0"]
    argv = ["--noise", "laplace", "--sigma", "1", "--norm", "1", "2", "--dim", "10", "--json"]
    calls = []
    monkeypatch.setattr(api, "_engine", lambda n, f=api._engine: calls.append(n) or f(n))
    assert _radius(*argv, "--pa", *p_as) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(fake_compute) == 1 and len(list(tmp_path.glob("curve-*.npz"))) == 1
    assert len(calls) == 1  # only p_A = 1 (outside any grid) goes to the engine
    assert [r["p_a"] for r in rows[::2]] == [float(p) for p in p_as]
    for row in rows:
        assert {"radius_family", "bound", "tight", "details"} <= set(row)
    # Each p_A is a grid point: the curve's own value there, no step down.
    # The fake curve of the law at alpha = 1 (what the cache holds), times alpha.
    noise = create_noise("laplace", sigma=1.0)
    unit = -float(noise.with_alpha(1.0).log_prob(torch.tensor([3.0]))[0]) * 10
    scale = noise.alpha * unit
    for row in rows[:8]:
        assert row["radius_family"] == pytest.approx(row["p_a"] * scale)
    assert _radius(*argv, "--pa", "0.9") == 0  # one p_A: the direct engine
    assert len(calls) == 2


@pytest.mark.slow
def test_many_pa_curve_matches_the_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNICR_CACHE", str(tmp_path))
    p_as = ["0.6", "0.9", "0.99"]
    argv = ["--noise", "laplace", "--sigma", "1", "--norm", "1", "2", "--dim", "100", "--json"]
    assert _radius(*argv, "--pa", *p_as) == 0
    for row in map(json.loads, capsys.readouterr().out.splitlines()):
        noise = create_noise("laplace", sigma=1.0)
        (direct,) = certified_radii(noise, row["p_a"], norms=(row["norm"],), dim=100)
        fam = direct.radius_family
        assert fam * (1 - 2e-3) <= row["radius_family"] <= fam
        assert row["radius"] <= row["radius_family"]


def test_device_without_cuda_is_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _radius("--dim", "10", "--pa", "0.9", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err
    assert _radius("--dim", "10", "--pa", "0.9", "--device", "nonsense") == 2
    assert "is not a torch device" in capsys.readouterr().err
