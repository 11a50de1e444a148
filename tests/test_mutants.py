"""Tests that kill the plausible soundness bugs mutation testing found surviving (docs/testing.md).

Each test pins one property a wrong certificate would break: which draws choose the class, both
signs of an asymmetric density, exactly the missing rows on resume, a swarm that can only lower
the radius, and a cache that never mixes two densities.
"""

import math

import numpy as np
import torch
from torch import nn

from unicr_pl.noises import create_noise
from unicr_pl.radius import RadiusCurve, certified_radii
from unicr_pl.radius import api as radius_api
from unicr_pl.radius.curve import default_p_grid
from unicr_pl.radius.exact import ExactEngine
from unicr_pl.results import ResultWriter
from unicr_pl.smoothing import ABSTAIN, SmoothedClassifier


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
    assert math.isclose(r.radius, r_mirror.radius, rel_tol=1e-3)
    # At the worst k the radius is that of the worse sign, searched on its own.
    engine, k = ExactEngine(noise), r.details["worst_k"]
    per_sign = [engine.boundary_scale(k, 0.9, 0.1, sign=s) for s in (1.0, -1.0)]
    assert not math.isclose(per_sign[0], per_sign[1], rel_tol=1e-2)  # the signs do differ
    expected = min(per_sign) * (1 - engine.config.margin) * k
    assert math.isclose(r.radius, expected, rel_tol=1e-9)


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
    exact = certified_radii(noise, 0.9, norms=(2,), dim=8)[0].radius

    def fake_pso(noise, p_a, p_b, p, dim, cfg, seed=None, device="cpu", start=None):
        return {"direction": torch.ones(dim, dtype=torch.float64)}

    def fake_costs(noise, eps, directions, p_a, p_b, rtol):
        # The "found" direction measures 3x better than the start: a worse direction.
        return torch.tensor([3.0] + [1.0] * (directions.shape[0] - 1), dtype=torch.float64)

    monkeypatch.setattr(radius_api, "pso_radius", fake_pso)
    monkeypatch.setattr(radius_api, "direction_radii", fake_costs)
    refined = certified_radii(noise, 0.9, norms=(2,), dim=8, refine=True)[0]
    assert refined.radius <= exact and refined.details["pso_gain"] <= 1.0


def laplace_shape(y):
    return -torch.abs(y)


def gaussian_shape(y):
    return -0.5 * y * y


def test_densities_with_one_name_never_share_a_cached_curve(tmp_path):
    grid = default_p_grid(4)
    curves = []
    for fn in (gaussian_shape, laplace_shape):
        fn.__name__ = "density"  # two different densities, one name and one scale
        noise = create_noise("custom", log_density=fn, alpha=1.0)
        curves.append(RadiusCurve(noise, 4, norms=(1,), p_grid=grid, cache_dir=tmp_path).radii[1])
    # Laplace-shaped noise certifies a larger l1 radius than Gaussian-shaped (same alpha).
    assert np.all(curves[1] > curves[0] * 1.01)
