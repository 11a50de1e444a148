"""Tests that kill the plausible soundness bugs mutation testing found surviving (docs/testing.md).

Each test pins one property a wrong certificate would break: which draws choose the class, both
signs of an asymmetric density, exactly the missing rows on resume, a swarm that can only lower
the radius (tests/test_cache.py: a cache that never mixes two densities).
"""

import math
import time

import numpy as np
import pytest
import torch
from scipy import integrate, optimize
from scipy.stats import norm
from torch import nn

from unicr_pl.noises import create_noise
from unicr_pl.radius import api as radius_api
from unicr_pl.radius import certified_radii
from unicr_pl.radius import closed_forms as cf
from unicr_pl.radius.exact import ExactEngine
from unicr_pl.radius.neyman_pearson import (
    boundary_gap,
    boundary_p_a,
    log_thresholds,
    lower_set_y_mass,
)
from unicr_pl.results import ResultWriter
from unicr_pl.smoothing import ABSTAIN, SmoothedClassifier, sample_seed


class FirstRowsVoteZero(nn.Module):
    """Class 0 for the first `n0` noisy inputs it is shown, class 1 for every later one."""

    def __init__(self, n0: int) -> None:
        super().__init__()
        self.n0, self.seen = n0, 0

    def forward(self, x):
        rank = self.seen + torch.arange(x.shape[0])
        self.seen += x.shape[0]
        return torch.stack([(rank < self.n0).double(), (rank >= self.n0).double()], dim=1)


def test_class_is_chosen_on_the_selection_draws_only():
    # Selection draws say 0, estimation draws say 1: choosing on the estimation counts would
    # certify class 1 with p_A ~ 1; the right procedure guesses 0 and cannot certify it.
    n0, n = 30, 200
    smoothed = SmoothedClassifier(FirstRowsVoteZero(n0), create_noise("gaussian"), 2, batch_size=7)
    cert = smoothed.certify(torch.zeros(1, 3), n0, n, 0.01, torch.Generator().manual_seed(0))
    assert cert.prediction[0] == ABSTAIN
    np.testing.assert_array_equal(cert.counts[0], [0, n])


class SignOfFirstPixel(nn.Module):
    def forward(self, x):
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)


def test_estimation_counts_are_the_n_draws_after_the_n0_draws():
    noise = create_noise("gaussian", sigma=1.0)
    smoothed = SmoothedClassifier(SignOfFirstPixel(), noise, 2, batch_size=64)
    x = torch.full((1, 4), 0.05)
    cert = smoothed.certify(x, 50, 300, 0.01, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    smoothed.counts(x, 50, gen)  # the selection draws come first from the same stream
    np.testing.assert_array_equal(cert.counts, smoothed.counts(x, 300, gen).numpy())


def gumbel(y):
    return -(y + torch.exp(-y))


def mirrored_gumbel(y):
    return -(-y + torch.exp(y))


def test_mirrored_asymmetric_density_has_the_same_radius_the_worse_sign():
    noise = create_noise("custom", log_density=gumbel, alpha=1.0)
    mirror = create_noise("custom", log_density=mirrored_gumbel, alpha=1.0)
    assert not noise.symmetric and not mirror.symmetric
    r, r_mirror = (certified_radii(z, 0.9, norms=(1,), dim=4)[0] for z in (noise, mirror))
    # radius_family: the structured search's radius (r.radius is a proven bound below it).
    assert math.isclose(r.radius_family, r_mirror.radius_family, rel_tol=1e-3)
    # At the worst k the radius is that of the worse sign, searched on its own.
    engine, k = ExactEngine(noise), r.details["worst_k"]
    per_sign = [engine.boundary_scale(k, 0.9, 0.1, sign=s) for s in (1.0, -1.0)]
    assert not math.isclose(per_sign[0], per_sign[1], rel_tol=1e-2)  # the signs do differ
    expected = min(per_sign) * (1 - engine.config.margin) * k
    assert math.isclose(r.radius_family, expected, rel_tol=1e-9)


def test_resume_with_gaps_keeps_exactly_the_written_rows(tmp_path):
    path, settings = tmp_path / "r.tsv", {"n": 10}
    writer = ResultWriter(path, [2.0], settings)
    for i in (0, 1, 3, 5):
        writer.write({c: i if c == "idx" else 0 for c in writer.columns})
    writer.close()
    again = ResultWriter(path, [2.0], settings)
    assert again.done == {0, 1, 3, 5}
    again.close()


def test_refine_never_raises_the_exact_radius(monkeypatch):
    noise = create_noise("laplace", sigma=1.0)
    exact = certified_radii(noise, 0.9, norms=(2,), dim=8)[0].radius_family

    def fake_pso(noise, p_a, p_b, p, dim, cfg, seed=None, device="cpu", start=None):
        return {"direction": torch.ones(dim, dtype=torch.float64)}

    def fake_costs(noise, eps, directions, p_a, p_b, rtol):
        # The "found" direction measures 3x better than the start: a worse direction.
        return torch.tensor([3.0] + [1.0] * (directions.shape[0] - 1), dtype=torch.float64)

    monkeypatch.setattr(radius_api, "pso_radius", fake_pso)
    monkeypatch.setattr(radius_api, "direction_radii", fake_costs)
    refined = certified_radii(noise, 0.9, norms=(2,), dim=8, refine=True)[0]
    assert refined.radius_family <= exact and refined.details["pso_gain"] <= 1.0
    assert refined.radius <= refined.radius_family


# Closed forms: the survivors of the first mutation run (docs/testing.md), each checked against
# an independent computation rather than against the code's own output.


def test_gaussian_l1_and_linf_use_the_runner_up():
    assert cf.gaussian_l1(0.5, 0.8, 0.1) == cf.cohen_l2(0.5, 0.8, 0.1) != cf.cohen_l2(0.5, 0.8)
    assert math.isclose(cf.gaussian_linf(0.5, 0.8, 16, 0.1), cf.cohen_l2(0.5, 0.8, 0.1) / 4)
    assert math.isclose(cf.gaussian_linf(0.5, 0.8, 16), 0.5 * norm.ppf(0.8) / 4)


@pytest.mark.parametrize(("scale", "beta", "p_a"), [(1.0, 3.0, 0.9), (0.5, 1.5, 0.7)])
def test_yang_pareto_matches_its_integral(scale, beta, p_a):
    # 2F1(1, c; c + 1; x) = c * integral_0^1 t^(c - 1) / (1 - x t) dt.
    z, c = 2 * p_a - 1, beta / (beta + 1)
    x = z ** (1 + 1 / beta)
    hyp = c * integrate.quad(lambda t: t ** (c - 1) / (1 - x * t), 0, 1)[0]
    assert math.isclose(cf.yang_pareto_l1(scale, beta, p_a), scale * z / beta * hyp, rel_tol=1e-7)


@pytest.mark.parametrize(("p_a", "p_b"), [(0.9, None), (0.7, 0.2)])
def test_pixeldp_is_the_best_feasible_dp_radius(p_a, p_b):
    sigma, q_b = 0.7, 1 - p_a if p_b is None else p_b

    def radius(log_delta):  # the largest l2 size whose (eps, delta)-DP certifies p_A > ...
        delta = math.exp(log_delta)
        if p_a - q_b - 2 * delta <= 0:
            return 0.0
        eps = optimize.brentq(
            lambda e: p_a - math.exp(2 * e) * q_b - (1 + math.exp(e)) * delta, 0, 50
        )
        return min(eps, 1.0) * sigma / math.sqrt(2 * math.log(1.25 / delta))

    top = -optimize.minimize_scalar(
        lambda u: -radius(u),
        bounds=(math.log(1e-12), math.log(0.5 * (p_a - q_b))),
        method="bounded",
    ).fun
    got = cf.pixeldp_l2(sigma, p_a, p_b)
    assert top * (1 - 1e-3) <= got <= top * (1 + 1e-9)
    assert cf.pixeldp_l2(sigma, 0.4, 0.4) == 0.0


def test_references_give_the_forms_of_this_noise():
    gauss = create_noise("gaussian", sigma=0.5)
    refs = cf.references(gauss, 16)
    assert [(label, p) for label, p, _ in refs] == [
        ("cohen_l2", 2.0),
        ("gaussian_l1", 1.0),
        ("gaussian_linf", math.inf),
        ("pixeldp_l2", 2.0),
    ]
    expected = [
        cf.cohen_l2(0.5, 0.9),
        cf.gaussian_l1(0.5, 0.9),
        cf.gaussian_linf(0.5, 0.9, 16),
        cf.pixeldp_l2(0.5, 0.9),
    ]
    assert [f(0.9) for _, _, f in refs] == expected
    as_gennormal = cf.references(create_noise("gennormal", beta=2.0, sigma=0.5), 16)
    assert [f(0.9) for _, _, f in as_gennormal] == expected
    assert cf.references(create_noise("gennormal", beta=1.5), 16) == []
    single = [
        (create_noise("laplace", alpha=0.3), "teng_l1", cf.teng_laplace_l1(0.3, 0.9)),
        (create_noise("uniform", alpha=0.3), "uniform_l1", cf.uniform_l1(0.3, 0.9)),
        (
            create_noise("pareto", alpha=0.3, beta=4.0),
            "yang_pareto_l1",
            cf.yang_pareto_l1(0.3, 4.0, 0.9),
        ),
    ]
    for noise, label, want in single:
        ((got_label, p, f),) = cf.references(noise, 16)
        assert (got_label, p, f(0.9)) == (label, 1.0, want)


def test_log_thresholds_in_float64_and_at_the_last_atom():
    values = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    assert log_thresholds(values, torch.full((3,), 1 / 3, dtype=torch.float64), 0.5, 0.1) == (1, 2)
    # p_A 2e-9 past the first atom's mass (lost in float32), and 1 - p_B = 1 beyond the
    # rounded total mass: both quantiles must still land on the right atoms.
    mass = torch.tensor([0.5 + 1e-9, 0.25, 0.25 - 1e-9 - 1e-12], dtype=torch.float64)
    assert log_thresholds(values, mass, 0.5 + 2e-9, 0.0) == (1.0, 2.0)


def test_teng_and_uniform_edges_and_scale():
    assert cf.teng_laplace_l1(1.0, 0.3, 0.3) == 0.0 and cf.teng_laplace_l1(1.0, 0.0, 0.0) == 0.0
    # p_B = 0, or p_A - p_B = 1: nothing else is ever predicted, the radius is unbounded.
    assert cf.teng_laplace_l1(1.0, 0.9, 0.0) == math.inf == cf.teng_laplace_l1(1.0, 1.0, 0.0)
    # Multi-class, where the first form wins: b / 2 log(p_A / p_B) with b = 2.
    assert math.isclose(cf.teng_laplace_l1(2.0, 0.6, 0.1), math.log(6))
    assert math.isclose(cf.uniform_l1(0.3, 0.9), 0.3 * 0.8)


def f64(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_lower_set_y_mass_is_float64_clipped_and_safe_at_u_1():
    values, mass = f64(0.0, 1.0, 2.0), f64(0.5 + 1e-9, 0.25, 0.25 - 1e-9 - 1e-12)
    beta = lower_set_y_mass(values, mass, f64(0.5 + 2e-9, 1.0))
    # 1e-9 of X-mass past the first atom weighs e^1 each (float32 would lose it).
    assert math.isclose(float(beta[0]), 0.5 + 1e-9 + 1e-9 * math.e, rel_tol=1e-15)
    assert float(beta[1]) == 1.0  # clipped: this (unnormalised) law's Y-mass exceeds 1
    assert 0 <= float(lower_set_y_mass(f64(0.0), f64(1.0), f64(0.3))[0]) <= 1


def test_boundary_gap_is_float64_and_batched():
    values, mass = f64(0.0, 1.0), f64(0.5 + 1e-9, 0.5 - 1e-9)
    gap = float(boundary_gap(values, mass, 0.5 + 2e-9, 0.2))
    expected = float(lower_set_y_mass(values, mass, f64(0.5 + 2e-9, 0.8)).sum()) - 1
    assert gap == expected and gap != float(boundary_gap(values, mass, 0.5, 0.2))
    batch = torch.stack([f64(-1.0, 0.0, 1.0), f64(-2.0, 0.0, 2.0)])  # [2, 3]
    got = boundary_gap(batch, f64(0.2, 0.5, 0.3), 0.7, 0.2)
    one = [float(boundary_gap(batch[i], f64(0.2, 0.5, 0.3), 0.7, 0.2)) for i in range(2)]
    assert got.shape == (2,) and got.tolist() == one


def test_boundary_p_a_at_the_first_atoms_and_when_never_reached():
    assert boundary_p_a(f64(0.0, 0.0), f64(0.5, 0.5)) == 0.5  # reached inside atom 0
    assert math.isclose(boundary_p_a(f64(0.0, 0.0, 0.0), f64(1, 1, 1) / 3), 0.5)  # atom 1
    assert boundary_p_a(f64(-1.0, -1.0), f64(0.5, 0.5)) == 1.0  # Y-mass below 1/2 throughout


def test_sample_seed_refuses_negative_seeds_and_keys():
    """A negative seed or key is refused by name (one survivor of the mutation run: `or`
    weakened to `and` let a negative key through to numpy's own error)."""
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2) != sample_seed(0, 2, 1)
    for seed, key in ((-1, (0,)), (0, (0, -1)), (-1, (-1,))):
        with pytest.raises(ValueError, match="seeds and their keys must be >= 0"):
            sample_seed(seed, *key)


def test_radius_functions_default_to_l2_in_one_dimension():
    # Laplace noise is worst away from the axis in l2, so d = 1 and d = 2 differ.
    laplace = create_noise("laplace", sigma=1.0)
    one = certified_radii(laplace, 0.9, norms=(2,), dim=1)[0].radius
    assert radius_api.certified_radius(laplace, 0.9) == one
    assert certified_radii(laplace, 0.9)[0].radius == one  # the list form: the same defaults
    two = certified_radii(laplace, 0.9, norms=(2,), dim=2)[0].radius
    assert two < one * 0.99
    # In d = 1 every l_p norm gives the same radius: l2 shows only from d = 2.
    assert radius_api.certified_radius(laplace, 0.9, dim=2) == two
    assert certified_radii(laplace, 0.9, dim=2)[0].radius == two


def test_radius_result_carries_every_field():
    gaussian = create_noise("gaussian", sigma=0.8125)  # a law no other test caches
    start = time.perf_counter()
    (res,) = certified_radii(gaussian, 0.9, 0.05, norms=(2,), dim=16)
    elapsed = time.perf_counter() - start
    assert (res.noise, res.p_a, res.p_b, res.norm, res.dim) == (
        gaussian.describe(),
        0.9,
        0.05,
        2,
        16,
    )
    assert (res.method, res.bound, res.tight) == ("exact", "cohen-gaussian", True)
    assert res.radius == pytest.approx(cf.cohen_l2(0.8125, 0.9, 0.05), rel=2e-4)
    assert res.radius <= res.radius_family == pytest.approx(res.radius, rel=2e-4)
    # Seconds per norm: nearly all of one call's time goes into its one norm (the checks
    # before the clock starts take microseconds; 0.6 leaves room for a busy machine) ...
    assert 0.6 * elapsed <= res.seconds <= elapsed
    # ... and is shared out between two.
    other = create_noise("gaussian", sigma=0.8126)
    start = time.perf_counter()
    both = certified_radii(other, 0.9, norms=(1, 2), dim=16)
    elapsed = time.perf_counter() - start
    assert all(0.3 * elapsed <= r.seconds <= 0.5 * elapsed for r in both)


def test_no_radius_at_a_tie_and_the_swarm_reports_its_draws():
    gaussian = create_noise("gaussian", sigma=1.0)
    for method in ("exact", "pso"):
        (tie,) = certified_radii(gaussian, 0.5, norms=(2,), dim=4, method=method)
        assert tie.radius == tie.radius_family == 0.0
    (res,) = certified_radii(gaussian, 0.9, norms=(2,), dim=4, method="pso", samples=7, seed=3)
    assert res.details == {"samples": 7, "seed": 3}
