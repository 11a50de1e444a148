"""Noise library: laws against scipy (or an independent quadrature), sigma = RMS, bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from unicr_pl.noises import create_noise, list_noises
from unicr_pl.noises.families import ExponentialMixture, rejection_sample

N = 200_000


def draws(noise, n=N, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return noise.sample((n,), generator=gen, dtype=torch.float64).numpy()


def lapgauss_weight(beta: float) -> float:
    """Mass of the Laplace term of Table 7's beta exp(-|y|) + (1 - beta) exp(-y^2), by
    quadrature (independent of the library's closed form)."""
    lap = integrate.quad(lambda y: beta * math.exp(-abs(y)), -np.inf, np.inf)[0]
    gauss = integrate.quad(lambda y: (1 - beta) * math.exp(-y * y), -np.inf, np.inf)[0]
    return lap / (lap + gauss)


def mixture_cdf(noise):
    w, a = lapgauss_weight(noise.beta), noise.alpha
    assert math.isclose(noise.weight, w, rel_tol=1e-9)
    return lambda x: (
        w * stats.laplace.cdf(x, scale=a) + (1 - w) * stats.norm.cdf(x, scale=a / math.sqrt(2))
    )


def pointwise_cdf(noise, xs):
    """CDF at a few points by scipy.quad over the whole line (slow, exact to ~1e-10)."""

    def dens(x):
        return math.exp(float(noise.log_prob(torch.tensor([x], dtype=torch.float64))[0]))

    total = integrate.quad(dens, -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0]
    return np.array(
        [integrate.quad(dens, -np.inf, x, epsabs=0, epsrel=1e-12)[0] / total for x in xs]
    )


def quadrature_cdf(noise, lo=-12.0, hi=12.0, points=2001):
    """CDF by adaptive quadrature of exp(log_prob) (scipy.quad, cell by cell) on a grid,
    interpolated: independent of the sampler and of the library's inverse CDF."""

    def dens(x):
        return math.exp(float(noise.log_prob(torch.tensor([x], dtype=torch.float64))[0]))

    grid = np.linspace(lo, hi, points)
    cells = [integrate.quad(dens, a, b)[0] for a, b in zip(grid[:-1], grid[1:], strict=True)]
    left, right = integrate.quad(dens, -np.inf, lo)[0], integrate.quad(dens, hi, np.inf)[0]
    cdf = np.concatenate([[left], left + np.cumsum(cells)]) / (left + sum(cells) + right)
    return lambda x: np.interp(x, grid, cdf)


# (name, params, scipy law or None, how to get a CDF for the KS test)
CASES = [
    ("gaussian", {}, lambda n: stats.norm(scale=n.alpha / math.sqrt(2))),
    ("laplace", {}, lambda n: stats.laplace(scale=n.alpha)),
    ("hypsecant", {}, lambda n: stats.hypsecant(scale=n.alpha)),
    ("gennormal", {"beta": 0.75}, lambda n: stats.gennorm(0.75, scale=n.alpha)),
    # beta = 1: Gamma(1), d = 2/3: the one shape here where a Marsaglia-Tsang c below
    # 1 / sqrt(9 d) (e.g. sqrt(d) / 3) makes the sampler inexact
    ("gennormal", {"beta": 1.0}, lambda n: stats.gennorm(1.0, scale=n.alpha)),
    ("gennormal", {"beta": 1.5}, lambda n: stats.gennorm(1.5, scale=n.alpha)),
    ("gennormal", {"beta": 3.0}, lambda n: stats.gennorm(3.0, scale=n.alpha)),
    ("uniform", {}, lambda n: stats.uniform(loc=-n.alpha, scale=2 * n.alpha)),
]


@pytest.mark.parametrize(("name", "params", "law"), CASES)
def test_sampling_matches_scipy_law(name, params, law):
    noise = create_noise(name, sigma=0.7, **params)
    x = draws(noise)
    ref = law(noise)
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    assert math.isclose(noise.sigma, ref.std(), rel_tol=1e-9)
    assert abs(np.sqrt(np.mean(x**2)) / 0.7 - 1) < 0.02  # sigma is the RMS of the draws
    u = np.array([1e-12, 1e-4, 0.3, 0.5, 0.9, 1 - 1e-9])
    np.testing.assert_allclose(noise.icdf(u), ref.ppf(u), rtol=1e-7, atol=1e-12)
    grid = np.linspace(-2, 2, 41) * 0.7
    if name == "uniform":
        grid = grid[np.abs(grid) < noise.alpha]
    diff = noise.log_prob(torch.from_numpy(grid)).numpy() - ref.logpdf(grid)
    assert np.ptp(diff) < 1e-9  # log_prob is the log-density up to a constant


def test_cauchy_and_pareto_need_alpha():
    with pytest.raises(ValueError, match="cauchy has infinite RMS"):
        create_noise("cauchy", sigma=1.0)
    with pytest.raises(ValueError, match="pareto with beta=2 has infinite RMS"):
        create_noise("pareto", beta=2.0, sigma=1.0)


def test_cauchy_law():
    noise = create_noise("cauchy", alpha=0.5)
    assert stats.kstest(draws(noise), stats.cauchy(scale=0.5).cdf).pvalue > 1e-3
    assert math.isinf(noise.sigma)


@pytest.mark.parametrize("beta", [1.5, 3.0])
def test_pareto_magnitude_is_lomax(beta):
    noise = create_noise("pareto", alpha=0.8, beta=beta)
    x = draws(noise)
    assert stats.kstest(np.abs(x), stats.lomax(beta, scale=0.8).cdf).pvalue > 1e-3
    assert stats.binomtest(int((x > 0).sum()), x.size).pvalue > 1e-3  # symmetric
    if beta > 2:
        ref = math.sqrt(2 * 0.8**2 / ((beta - 1) * (beta - 2)))
        assert math.isclose(noise.sigma, ref, rel_tol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_laplace_gaussian_mixture(beta):
    noise = create_noise("lapgauss", sigma=1.0, beta=beta)
    x = draws(noise)
    assert stats.kstest(x, mixture_cdf(noise)).pvalue > 1e-3
    assert abs(np.sqrt(np.mean(x**2)) - 1) < 0.02
    u = np.array([1e-10, 0.01, 0.25, 0.45, 0.499, 0.7])
    np.testing.assert_allclose(mixture_cdf(noise)(noise.icdf(u)), u, rtol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.999, 1.0])
def test_exponential_mixture(beta):
    noise = create_noise("expmix", sigma=1.0, beta=beta)
    x = draws(noise, n=50_000)
    cdf = quadrature_cdf(noise)
    assert stats.kstest(x, cdf).pvalue > 1e-3
    assert abs(np.sqrt(np.mean(x**2)) - 1) < 0.03
    u = np.array([1e-6, 0.2, 0.45])
    np.testing.assert_allclose(pointwise_cdf(noise, noise.icdf(u)), u, rtol=1e-6)


def quartic(y):
    return -(y**4)


def test_custom_density_by_callable_and_import_path():
    noise = create_noise("custom", log_density=quartic, sigma=1.0)
    x = draws(noise, n=50_000)
    assert stats.kstest(x, quadrature_cdf(noise)).pvalue > 1e-3
    assert abs(np.sqrt(np.mean(x**2)) - 1) < 0.02
    assert noise.symmetric
    same = create_noise("custom", log_density="tests.test_noises:quartic", sigma=1.0)
    assert math.isclose(same.alpha, noise.alpha)


def test_custom_asymmetric_density():
    # Gumbel-like skewed density: the numerical inverse CDF must follow both tails.
    noise = create_noise("custom", log_density=lambda y: -(y + torch.exp(-y)), alpha=1.0)
    assert not noise.symmetric
    x = draws(noise, n=50_000)
    assert stats.kstest(x, stats.gumbel_r.cdf).pvalue > 1e-3
    np.testing.assert_allclose(
        noise.icdf([1e-6, 0.5, 1 - 1e-6]), stats.gumbel_r.ppf([1e-6, 0.5, 1 - 1e-6]), rtol=1e-3
    )


def test_registry_lists_every_family():
    expected = {
        "gaussian",
        "laplace",
        "hypsecant",
        "gennormal",
        "cauchy",
        "pareto",
        "lapgauss",
        "expmix",
        "uniform",
        "custom",
    }
    assert set(list_noises()) == expected


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown noise 'nope'; valid names: cauchy"),
        ("gaussian", {"beta": 2.0}, "takes no parameter beta"),
        ("gaussian", {"sigma": 0.0}, "sigma must be in"),
        ("gaussian", {"sigma": -1.0}, "sigma must be in"),
        ("laplace", {"alpha": float("nan")}, "alpha must be a finite number"),
        ("gaussian", {"alpha": 1.0, "sigma": 1.0}, "not both"),
        ("gennormal", {"beta": 0.0}, "beta must be in"),
        ("gennormal", {"beta": -1.0}, "beta must be in"),
        ("lapgauss", {"beta": 1.5}, r"beta must be in \[0, 1\]"),
        ("expmix", {"beta": -0.1}, r"beta must be in \[0, 1\]"),
        ("pareto", {"alpha": 1.0, "beta": 0.0}, "beta must be in"),
        ("custom", {"log_density": "no_such_module:f"}, "cannot import log_density"),
        ("custom", {"log_density": "not a path"}, "module:function"),
    ],
)
def test_bad_parameters_raise_clear_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        create_noise(name, **params)


def test_sampling_is_seedable_and_follows_like_tensor():
    noise = create_noise("gennormal", beta=0.75, sigma=1.0)
    a = noise.sample((3, 5), generator=torch.Generator().manual_seed(1))
    b = noise.sample((3, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    like = torch.zeros(2, 3, dtype=torch.float64)
    y = noise.sample(like)
    assert y.shape == like.shape and y.dtype == torch.float64 and y.device == like.device
    with pytest.raises(ValueError, match="floating dtype"):
        noise.sample((2,), dtype=torch.int64)


def test_exponential_mixture_far_tail_sampler():
    # beta -> 1: the truncation point c / s of the normal is ~220 sd out, beyond any inverse
    # CDF; the exact rejection sampler takes over and must still give the law (~ Laplace).
    noise = create_noise("expmix", alpha=1.0, beta=0.99999)
    x = draws(noise, n=50_000)
    assert stats.kstest(x, stats.laplace.cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gaussian", {}),
        ("laplace", {}),
        ("hypsecant", {}),
        ("gennormal", {"beta": 0.5}),
        ("gennormal", {"beta": 2.0}),
        ("cauchy", {"alpha": 0.7}),
        ("pareto", {"alpha": 0.7, "beta": 1.5}),
        ("lapgauss", {"beta": 0.3}),
        ("expmix", {"beta": 0.4}),
        ("uniform", {}),
        ("custom", {"log_density": lambda y: -(y**4)}),
    ],
)
def test_in_place_log_prob_matches_log_prob(name, params):
    noise = create_noise(name, **params)
    x = torch.tensor(
        [-1e6, -3.7, -1.0, -0.25, 0.0, 1e-300, 0.5, 1.0, 1.0 + 1e-12, 2.0, 40.0],
        dtype=torch.float64,
    )
    x = x * noise.alpha
    expected = noise.log_prob(x)
    buffer = x.clone()
    out = noise.log_prob_(buffer)
    assert out.data_ptr() == buffer.data_ptr()  # written in place, not a new tensor
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=0.0, equal_nan=True)


# ---- every family: the density of Table 7, seeded draws in the requested precision ----

TABLE7 = {  # unnormalised log-densities of y = x / alpha, from the paper's Table 7
    "gaussian": lambda y, b: -(y**2),
    "laplace": lambda y, b: -np.abs(y),
    "hypsecant": lambda y, b: -np.log(np.cosh(y)),
    "gennormal": lambda y, b: -(np.abs(y) ** b),
    "cauchy": lambda y, b: -np.log1p(y**2),
    "pareto": lambda y, b: -(b + 1) * np.log1p(np.abs(y)),
    "lapgauss": lambda y, b: np.log(b * np.exp(-np.abs(y)) + (1 - b) * np.exp(-(y**2))),
    "expmix": lambda y, b: -b * np.abs(y) - (1 - b) * y**2,
    "uniform": lambda y, b: np.where(np.abs(y) <= 1, 0.0, -np.inf),
}
DENSITY_CASES = [
    ("gaussian", {}),
    ("laplace", {}),
    ("hypsecant", {}),
    ("gennormal", {"beta": 0.5}),
    ("gennormal", {"beta": 3.0}),
    ("cauchy", {"alpha": 0.7}),
    ("pareto", {"alpha": 0.7, "beta": 1.5}),
    ("lapgauss", {"beta": 0.0}),
    ("lapgauss", {"beta": 0.3}),
    ("lapgauss", {"beta": 1.0}),
    ("expmix", {"beta": 0.0}),
    ("expmix", {"beta": 0.4}),
    ("expmix", {"beta": 1.0}),
    ("uniform", {}),
]


@pytest.mark.parametrize(("name", "params"), DENSITY_CASES)
def test_log_prob_is_table7_density(name, params):
    """log_prob(x) = Table 7's log-density of x / alpha plus a constant (the radius engine
    integrates exactly this function: a wrong sign or weight here is a wrong certificate)."""
    noise = create_noise(name, **params)
    y = np.linspace(-6.0, 6.0, 97) + 1e-3  # avoid y = 0 exactly, where every kink sits
    got = noise.log_prob(torch.from_numpy(y * noise.alpha)).numpy()
    expected = TABLE7[name](y, params.get("beta", 2.0))
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.ptp(got[finite] - expected[finite]) < 1e-9


SAMPLER_CASES = [
    ("gaussian", {}),
    ("laplace", {}),
    ("hypsecant", {}),
    ("gennormal", {"beta": 0.75}),  # Gamma(4/3): Marsaglia-Tsang directly
    ("gennormal", {"beta": 3.0}),  # Gamma(1/3): boosted by U^(1/a)
    ("cauchy", {"alpha": 0.7}),
    ("pareto", {"alpha": 0.7, "beta": 3.0}),
    ("lapgauss", {"beta": 0.3}),
    ("expmix", {"beta": 0.4}),  # inverse CDF of the normal tail
    ("expmix", {"beta": 0.99999}),  # far tail: exact rejection
    ("expmix", {"beta": 1.0}),  # the Laplace law
    ("uniform", {}),
]


@pytest.mark.parametrize(("name", "params"), SAMPLER_CASES)
def test_every_sampler_follows_its_generator_in_the_requested_precision(name, params):
    """Reproducible per seed (every part of a draw: magnitude, sign, mixture pick, rejection
    rounds) and made in float64 when float64 is asked for, not rounded from float32 (at alpha
    = 1: a float32 value times another alpha would not be a float32 any more)."""
    noise = create_noise(name, **params).with_alpha(1.0)

    def draw(seed: int, dtype: torch.dtype) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return noise.sample((4000,), generator=gen, dtype=dtype)

    a, b, c = draw(0, torch.float64), draw(0, torch.float64), draw(1, torch.float64)
    assert torch.equal(a, b)
    assert (a != c).double().mean() > 0.99
    assert a.dtype == torch.float64 and (a.float().double() != a).double().mean() > 0.9
    f = draw(0, torch.float32)
    assert f.dtype == torch.float32 and torch.equal(f, draw(0, torch.float32))


def test_icdf_of_cauchy_and_pareto_against_scipy():
    u = np.array([1e-12, 1e-4, 0.3, 0.5, 0.9, 1 - 1e-9])
    cauchy = create_noise("cauchy", alpha=0.7)
    np.testing.assert_allclose(
        cauchy.icdf(u), stats.cauchy(scale=0.7).ppf(u), rtol=1e-9, atol=1e-12
    )
    pareto = create_noise("pareto", alpha=0.7, beta=2.5)
    # symmetric Lomax: |X| ~ Lomax(beta, 0.7), the sign fair
    lomax = stats.lomax(2.5, scale=0.7)
    expected = np.where(u < 0.5, -lomax.isf(2 * u), lomax.isf(2 * (1 - u)))
    np.testing.assert_allclose(pareto.icdf(u), expected, rtol=1e-9, atol=1e-12)


def test_parameters_defaults_and_scale():
    for name in ("gennormal", "pareto", "lapgauss", "expmix"):
        noise = create_noise(name, alpha=0.7, beta=0.5)
        assert noise.params() == {"alpha": 0.7, "beta": 0.5}
    assert create_noise("gennormal", alpha=0.7).beta == 2.0
    assert create_noise("pareto", alpha=0.7).beta == 3.0
    assert create_noise("lapgauss", sigma=0.7).beta == create_noise("expmix", sigma=0.7).beta == 0.5
    gennormal = create_noise("gennormal", alpha=0.7, beta=1.5)
    assert gennormal.alpha == 0.7
    for name in ("gennormal", "lapgauss", "expmix"):
        assert math.isclose(create_noise(name, sigma=0.7, beta=0.5).sigma, 0.7, rel_tol=1e-12)
    # Pareto's RMS: |y| is Lomax(beta), E y^2 = 2 / ((beta - 1)(beta - 2)); sigma sets alpha.
    pareto = create_noise("pareto", sigma=1.3, beta=4.0)
    assert math.isclose(pareto.sigma, 1.3, rel_tol=1e-12)
    assert math.isclose(pareto.alpha, 1.3 / math.sqrt(2 / (3 * 2)), rel_tol=1e-12)


def test_far_tail_sampler_is_the_truncated_normal():
    """Robert's exponential proposal with rate z0 and acceptance exp(-(z - z0)^2 / 2) gives
    z ~ N(0, 1) conditioned on z >= z0 for any z0 > 0; at z0 = 1.5 a wrong acceptance shows."""
    z0 = 1.5
    gen = torch.Generator().manual_seed(0)
    z = ExponentialMixture._far_tail((100_000,), z0, "cpu", torch.float64, gen).numpy()
    assert z.min() >= z0
    again = torch.Generator().manual_seed(0)  # both the proposal and the acceptance are seeded
    assert np.array_equal(
        z, ExponentialMixture._far_tail((100_000,), z0, "cpu", torch.float64, again).numpy()
    )
    tail = stats.norm.sf(z0)
    assert stats.kstest(z, lambda x: 1 - stats.norm.sf(x) / tail).pvalue > 1e-3


def test_rejection_sample_refills_every_rejected_slot():
    calls = []

    def propose(m: int):
        calls.append(m)
        values = torch.full((m,), float(len(calls)), dtype=torch.float64)
        ok = torch.ones(m, dtype=torch.bool)
        if len(calls) <= 2:
            ok[0] = False  # the first slot is rejected in rounds 1 and 2
        return values, ok

    out = rejection_sample((2, 4), propose, "cpu", torch.float64)
    assert calls == [8, 1, 1]
    assert out.shape == (2, 4) and out.flatten()[0] == 3.0 and torch.all(out.flatten()[1:] == 1.0)
