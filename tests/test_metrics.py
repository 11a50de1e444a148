"""Metrics against plain numpy oracles, and the torchmetrics classes against the functions."""

import numpy as np
import pytest
import torch

from unicr_pl.metrics import (
    AverageCertifiedRadius,
    CertifiedAccuracy,
    RobustnessScore,
    average_certified_radius,
    certified_accuracy,
    certified_accuracy_curve,
    high_probability_certified_accuracy,
    robustness_score,
    top_radius_means,
)

rng = np.random.default_rng(0)


def sample(n=500, scale=1.0):
    radius = rng.exponential(scale, n) * (rng.random(n) > 0.2)
    correct = rng.random(n) > 0.3
    return radius, correct


def test_certified_accuracy_against_a_loop():
    radius, correct = sample()
    for r in (0.0, 0.3, 1.0, 5.0):
        oracle = sum(1 for x, c in zip(radius, correct, strict=True) if c and x >= r) / len(radius)
        assert certified_accuracy(radius, correct, r) == oracle
    grid = [0, 0.5, 1]
    np.testing.assert_array_equal(
        certified_accuracy_curve(radius, correct, grid),
        [certified_accuracy(radius, correct, r) for r in grid],
    )


def test_high_probability_is_cohens_formula_and_below_the_estimate():
    radius, correct = sample(1000)
    est = certified_accuracy(radius, correct, 0.5)
    hp = high_probability_certified_accuracy(radius, correct, 0.5, alpha0=0.001, rho=0.001)
    m, log_term = 1000, np.log(1000)
    expected = est - 0.001 - np.sqrt(0.001 * 0.999 * log_term / m) - log_term / (3 * m)
    assert np.isclose(hp, expected) and hp < est


def test_top_radius_means_against_a_loop():
    radius, correct = sample(503)
    got = top_radius_means(radius, correct, (0.2, 0.5, 1.0))
    for q, value in zip((0.2, 0.5, 1.0), got, strict=True):
        ranked = sorted(
            (r if c else 0.0 for r, c in zip(radius, correct, strict=True)), reverse=True
        )
        m = -(-q * len(radius) // 1)  # ceil
        assert np.isclose(value, sum(ranked[: int(m)]) / m)
    assert np.isclose(got[-1], average_certified_radius(radius, correct))
    assert got[0] >= got[1] >= got[2]
    with pytest.raises(ValueError, match="fractions"):
        top_radius_means(radius, correct, (0.0,))


def test_robustness_score_is_the_area_under_the_max_curve():
    sets = [sample(400, 0.5), sample(400, 1.0), sample(400, 2.0)]
    # Oracle: a fine Riemann sum of the max of the curves.
    grid = np.linspace(0, 40, 400_001)
    curves = [np.mean((r[None, :] >= grid[:, None]) & c[None, :], axis=1) for r, c in sets]
    oracle = np.sum(np.max(curves, axis=0)[1:] * np.diff(grid))
    assert abs(robustness_score(sets) - oracle) < 1e-3
    one = sets[0]
    assert np.isclose(robustness_score([one]), average_certified_radius(*one))
    with pytest.raises(ValueError):
        robustness_score([])


def test_metric_classes_match_the_functions():
    sets = [sample(300, 0.5), sample(300, 1.5)]
    grid = [0.0, 0.25, 0.5, 1.0]
    acc, acr, score = CertifiedAccuracy(grid), AverageCertifiedRadius(), RobustnessScore()
    r, c = sets[0]
    for chunk in np.array_split(np.arange(300), 3):
        acc.update(torch.from_numpy(r[chunk]), torch.from_numpy(c[chunk]))
        acr.update(torch.from_numpy(r[chunk]), torch.from_numpy(c[chunk]))
    for g, (rr, cc) in enumerate(sets):
        score.update(torch.from_numpy(rr), torch.from_numpy(cc), group=g)
    np.testing.assert_allclose(acc.compute().numpy(), certified_accuracy_curve(r, c, grid))
    assert np.isclose(float(acr.compute()), average_certified_radius(r, c))
    assert np.isclose(float(score.compute()), robustness_score(sets))


def test_bad_metric_input():
    with pytest.raises(ValueError, match="1-D of one length"):
        certified_accuracy([1.0, 2.0], [True], 0.5)
    with pytest.raises(ValueError, match="radii must be"):
        certified_accuracy([float("nan")], [True], 0.5)
