"""Proven radii (`unicr_pl.radius.bounds`): never above the family value, exact where the truth
is known, and below a brute-force true radius over *all* directions at d = 2 and 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from unicr_pl.noises import create_noise
from unicr_pl.noises.custom import CustomNoise
from unicr_pl.radius import certified_radii, closed_forms
from unicr_pl.radius.bounds import (
    BOUND_MARGIN,
    RENYI_ORDERS,
    ProvenRadius,
    RenyiBound,
    proven_radius,
    renyi_table,
    renyi_threshold,
)
from unicr_pl.radius.lookup import SampleRadius

P_AS = (0.6, 0.8, 0.9, 0.99)
NORMS = (1.0, 2.0, math.inf)
NOISES = {
    "gaussian": {},
    "laplace": {},
    "hypsecant": {},
    "gennormal-0.5": {"beta": 0.5},
    "gennormal-0.75": {"beta": 0.75},
    "gennormal-1.5": {"beta": 1.5},
    "gennormal-3": {"beta": 3.0},
    "cauchy": {"alpha": 1.0},
    "pareto": {"alpha": 1.0, "beta": 3.0},
    "lapgauss": {"beta": 0.5},
    "expmix": {"beta": 0.5},
    "uniform": {},
}


def make(key: str):
    return create_noise(key.split("-")[0], **NOISES[key])


# ---- brute force: the Neyman-Pearson gap of one perturbation by d-dimensional quadrature ----


def law_cdf(noise):
    """CDF of a built-in symmetric noise from scipy (or the mixtures' closed forms),
    independent of the library's quantiles and densities (the Laplace-Gaussian weight is the
    library's, checked against quadrature in tests/test_noises.py)."""
    a, b = noise.alpha, getattr(noise, "beta", None)
    laws = {
        "gaussian": lambda: stats.norm(scale=a / math.sqrt(2)).cdf,
        "laplace": lambda: stats.laplace(scale=a).cdf,
        "hypsecant": lambda: stats.hypsecant(scale=a).cdf,
        "gennormal": lambda: stats.gennorm(b, scale=a).cdf,
        "cauchy": lambda: stats.cauchy(scale=a).cdf,
        "uniform": lambda: stats.uniform(loc=-a, scale=2 * a).cdf,
    }
    if noise.name in laws:
        return laws[noise.name]()
    if noise.name == "pareto":  # |X| ~ Lomax(beta, alpha), the sign fair
        lomax = stats.lomax(b, scale=a)
        return lambda x: np.where(x < 0, 0.5 * lomax.sf(np.abs(x)), 1 - 0.5 * lomax.sf(np.abs(x)))
    if noise.name == "lapgauss":
        w = noise.weight
        return lambda x: (
            w * stats.laplace(scale=a).cdf(x) + (1 - w) * stats.norm(scale=a / math.sqrt(2)).cdf(x)
        )
    if noise.name == "expmix":  # |y| = s z - c, z ~ N(0, 1) given z >= c / s
        c, s = b / (2 * (1 - b)), 1 / math.sqrt(2 * (1 - b))
        tail = stats.norm.sf(c / s)

        def cdf(x):
            m = np.abs(x) / a  # P(|y| > m) = sf((m + c) / s) / tail
            half = 0.5 * stats.norm.sf((m + c) / s) / tail
            return np.where(x < 0, half, 1 - half)

        return cdf
    raise ValueError(noise.name)


def np_gap(noise, delta: np.ndarray, p_a: float, p_b: float, n: int | None = None) -> float:
    """P(X + delta in A) - P(X + delta in B) for the worst A (P_X(A) = p_A) and B (P_X(B) =
    p_B). X lives on a grid over the perturbed coordinates only (the others change neither the
    ratio nor the sets), n cells per axis (default CELLS_PER_AXIS: more when fewer move),
    equally wide in log-odds over [-10, 10] (fine in the tails, where A and B lie at large p_A)
    and graded towards 0. Each cell is an atom: its X- and Y-masses (Y = X + delta) are products
    of exact one-dimensional masses (scipy CDFs), the likelihood ratio their quotient. Merging a
    cell into one atom can only lose power, so this gap is at least the true one, by a
    second-order amount (the cell-centre ratio it replaces was first-order, and badly off in the
    tail cells). Where X + delta leaves the support of X (uniform) the missing Y-mass is an atom
    given to B."""
    cdf = law_cdf(noise)
    delta = np.asarray(delta, dtype=np.float64)
    delta = delta[delta != 0]  # unperturbed coordinates leave the ratio and both sets alone
    if delta.size == 0:
        return p_a - p_b
    n = n or CELLS_PER_AXIS[delta.size]
    # A third of the cells graded geometrically towards the median, where the cusps of Laplace
    # and generalised normal noise with beta < 1 sit.
    graded = np.geomspace(1e-5, 1.0, n // 6)
    t = np.unique(
        np.concatenate([np.linspace(-10.0, 10.0, n - 1 - 2 * graded.size), -graded, graded])
    )
    edges = np.concatenate([[-np.inf], noise.icdf(1 / (1 + np.exp(-t))), [np.inf]])

    def masses(shift: float) -> np.ndarray:
        lo, hi = edges[:-1] - shift, edges[1:] - shift
        # The side of 0 that keeps precision (every law here is symmetric).
        return np.clip(np.where(hi <= 0, cdf(hi) - cdf(lo), cdf(-lo) - cdf(-hi)), 0.0, None)

    x_mass, y_mass = np.ones(1), np.ones(1)
    for di in delta:
        x_mass = np.multiply.outer(x_mass, masses(0.0)).ravel()
        y_mass = np.multiply.outer(y_mass, masses(float(di))).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(x_mass > 0, y_mass / x_mass, np.inf)
    order = np.argsort(lr, kind="stable")
    x_cum = np.concatenate([[0], np.cumsum(x_mass[order])])
    moved = np.concatenate([[0], np.cumsum(y_mass[order])])  # P(Y in the lowest-ratio cells)
    total = moved[-1]
    atom = max(0.0, 1.0 - total) if noise.name == "uniform" else 0.0
    if atom == 0.0:
        moved, total = moved / total, 1.0
    x_cum = x_cum / x_cum[-1]
    worst_a = np.interp(p_a, x_cum, moved)
    worst_b = atom + total - np.interp(1 - p_b, x_cum, moved)
    return float(worst_a - worst_b)


def directions(dim: int, p: float, count: int) -> np.ndarray:
    """Unit l_p directions covering the sorted positive orthant (enough for iid symmetric
    noise: coordinate permutations and sign flips leave the law unchanged)."""
    if dim == 2:
        th = np.linspace(0, math.pi / 4, count)
        raw = np.stack([np.cos(th), np.sin(th)], axis=1)
    else:
        g = np.linspace(0, 1, count)
        raw = np.array([(1.0, a, b) for a in g for b in g if b <= a])
    norm = np.max(np.abs(raw), 1) if math.isinf(p) else np.sum(np.abs(raw) ** p, 1) ** (1 / p)
    return raw / norm[:, None]


def brute_radius(noise, p_a, p_b, p, dim, n, count, rtol=2e-3) -> float:
    """True radius: min over directions of the NP radius along each (bisection); n cells per
    axis (None: CELLS_PER_AXIS)."""
    best = math.inf
    for v in directions(dim, p, count):
        lo, hi = 0.0, 1.0
        while np_gap(noise, hi * v, p_a, p_b, n) > 0 and hi < 1e6:
            lo, hi = hi, 2 * hi
        while hi - lo > rtol * hi:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if np_gap(noise, mid * v, p_a, p_b, n) > 0 else (lo, mid)
        best = min(best, lo)
    return best


# Tolerance of the brute force (relative, in radius), per d. Cell atoms lose power, so the brute
# force errs high: that makes "brute <= family" below a conservative check and leaves "radius <=
# brute" resting on the tolerance exceeding the measured error. Gaussian noise against Cohen's
# exact radius, p_A in {0.6, 0.9, 0.99}: within 4.5e-5 with 600 cells per axis in 2-D. Where the
# likelihood ratio bends inside a cell (the cusp of generalised normal noise with beta = 0.5,
# Cauchy's tails) 130 cells per axis in 3-D still err high by up to ~1% (90 cells: 3%), so the one
# check per norm of the family's own direction takes 200 (generalised normal beta = 0.5, p_A =
# 0.99: +2.7e-3 of K at 1.01 times the family value with 130 cells, -5.6e-3 with 200). d = 3 keeps
# 1%, d = 2 is held to 2e-3. The family value carries the engine's margin (1e-4) below the truth.
BRUTE_RTOL = {2: 2e-3, 3: 1e-2}
DIRECTIONS = {2: 13, 3: 5}  # per axis of the direction grid
CELLS_PER_AXIS = {1: 20_000, 2: 600, 3: 130}  # by the number of perturbed coordinates
FAMILY_CELLS = {1: 20_000, 2: 600, 3: 200}


def check_against_brute(key: str, dim: int, p_a: float, p_b: float) -> None:
    noise = make(key)
    count = DIRECTIONS[dim]
    results = certified_radii(noise, p_a, p_b, norms=NORMS, dim=dim)
    raw = proven_radius(noise, dim).radii([p_a], [p_b], NORMS)  # before the cap by the family
    for res in results:
        p, radius, family = res.norm, float(raw[res.norm][0][0]), res.radius_family
        assert res.radius <= family
        # radius <= brute: every direction is still robust a little inside the proven radius.
        for v in directions(dim, p, count):
            gap = np_gap(noise, radius / (1 + BRUTE_RTOL[dim]) * v, p_a, p_b)
            assert gap > 0, (key, dim, p, p_a, v, radius)
        # brute <= family: the family's worst direction fails a little outside it.
        k = res.details["worst_k"]
        v = np.zeros(dim)
        v[:k] = 1.0 / (k if p == 1 else (k**0.5 if p == 2 else 1.0))
        cells = FAMILY_CELLS[min(k, dim)]
        gap = np_gap(noise, family * (1 + BRUTE_RTOL[dim]) * v, p_a, p_b, cells)
        assert gap <= 0, (key, p, family)


FAST = ["gaussian", "laplace", "gennormal-1.5", "cauchy", "uniform"]


@pytest.mark.parametrize("key", FAST)
@pytest.mark.parametrize("p_a, p_b", [(0.9, 0.1), (0.6, 0.2)])
def test_radius_below_brute_force_d2(key, p_a, p_b):
    check_against_brute(key, 2, p_a, p_b)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(NOISES))
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("p_a, p_b", [(0.6, 0.4), (0.9, 0.1), (0.99, 0.005)])
def test_radius_below_brute_force_all(key, dim, p_a, p_b):
    check_against_brute(key, dim, p_a, p_b)


def test_brute_force_matches_cohen():
    """The brute force itself: Gaussian at d = 2 within 2e-4 of Cohen's exact radius (its
    quadrature is within 4.5e-5, the bisection stops within 1e-4)."""
    noise = create_noise("gaussian", sigma=1.0)
    for p_a in (0.6, 0.9, 0.99):
        exact = closed_forms.cohen_l2(1.0, p_a)
        found = brute_radius(noise, p_a, 1 - p_a, 2.0, 2, 600, 5, rtol=1e-4)
        assert abs(found / exact - 1) < 2e-4


# ---- never above the family value, for every noise, norm and p_A ----


def check_never_above_family(key: str, p_as, multiclass: bool, dim: int = 3072) -> None:
    """The raw bound (before the cap by the family value) never exceeds the family value."""
    noise = make(key)
    for p_a in p_as:
        p_b = (1 - p_a) / 3 if multiclass else 1 - p_a
        results = certified_radii(noise, p_a, p_b, norms=NORMS, dim=dim)
        raw = proven_radius(noise, dim).radii([p_a], [p_b], NORMS)
        for res in results:
            # Where both are exact (e.g. the l1 axis) they meet within the engine's own margin
            # (1e-4) and root tolerance (1e-5), which the family value carries.
            assert 0 <= raw[res.norm][0][0] <= res.radius_family * (1 + 2.5e-4), (key, p_a, res)
            assert 0 <= res.radius <= res.radius_family and res.bound
            if res.radius > 0 and not res.tight:
                assert res.radius < res.radius_family * (1 - 1e-3)


@pytest.mark.parametrize("key", ["laplace", "hypsecant", "gennormal-0.75", "cauchy"])
def test_radius_never_above_family(key):
    check_never_above_family(key, (0.9,), False)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(NOISES))
@pytest.mark.parametrize("multiclass", [False, True])
def test_radius_never_above_family_all(key, multiclass):
    check_never_above_family(key, P_AS, multiclass)


# ---- exact where the truth is known ----


def rel(a: float, b: float) -> float:
    return abs(a / b - 1)


@pytest.mark.parametrize("p_a", P_AS)
def test_gaussian_every_norm_is_cohen_and_tight(p_a):
    noise = create_noise("gaussian", sigma=0.5)
    cohen = closed_forms.cohen_l2(0.5, p_a)
    for res in certified_radii(noise, p_a, norms=NORMS, dim=784):
        scale = 784**-0.5 if math.isinf(res.norm) else 1.0
        assert rel(res.radius, cohen * scale) < 1e-3
        assert res.radius <= cohen * scale
        assert res.tight


@pytest.mark.parametrize("p_a", P_AS)
def test_laplace_l1_is_teng(p_a):
    noise = create_noise("laplace", sigma=0.5)
    (res,) = certified_radii(noise, p_a, norms=(1,), dim=784)
    teng = closed_forms.teng_laplace_l1(noise.alpha, p_a)
    assert rel(res.radius, teng) < 1e-3 and res.radius <= teng and res.tight


@pytest.mark.parametrize("p_a", P_AS)
def test_laplace_l1_differential_reproduces_teng(p_a):
    """The differential method alone (the score law of Laplace noise is +-1/b) gives Teng."""
    noise = create_noise("laplace", sigma=0.5)
    pr = proven_radius(noise, 784)  # the law at alpha = 1, scaled by alpha
    g = pr.unit.line_g
    found = pr.alpha * 0.5 * (g.G(np.array([p_a])) - g.G(np.array([1 - p_a])))[0]
    teng = closed_forms.teng_laplace_l1(noise.alpha, p_a)
    assert rel(found, teng) < 1e-4 and found <= teng * (1 + 1e-9)


@pytest.mark.parametrize("p_a", P_AS)
def test_uniform_l1_linf_are_yang(p_a):
    noise = create_noise("uniform", sigma=0.5)
    d = 784
    r1, r2, rinf = certified_radii(noise, p_a, norms=NORMS, dim=d)
    assert rel(r1.radius, closed_forms.uniform_l1(noise.alpha, p_a)) < 1e-3 and r1.tight
    # Yang et al.: l_inf radius 2 w (1 - (3/2 - p_A)^(1/d)) in the binary case (the diagonal).
    yang_inf = 2 * noise.alpha * (1 - (1.5 - p_a) ** (1 / d))
    assert rel(rinf.radius, yang_inf) < 1e-3 and rinf.tight
    assert rel(r2.radius, r2.radius_family) < 1e-3 and r2.tight


def test_gaussian_domination_gives_cohen_on_the_score_route():
    """The l2 route on Gaussian noise treated as a generic noise: c = 1/sigma exactly."""
    noise = create_noise("gennormal", beta=2.0 - 1e-9, sigma=0.7)
    pr = ProvenRadius(noise, 784)
    assert rel(pr.c, 1 / 0.7) < 1e-3
    assert rel(pr.fisher, 1 / 0.49) < 1e-3


def test_margin_is_taken_off():
    noise = create_noise("laplace", sigma=1.0)
    pr = ProvenRadius(noise, 100)
    r, _ = pr.radii(np.array([0.9]), np.array([0.1]), [2.0])[2.0]
    domination = (1.2815515655446004 * 2) / (2 * pr.c)
    renyi = pr.renyi.radius([0.9], [0.1], 2.0)[0]
    cubic = 0.5 * (pr.line_g2.G(np.array([0.9])) - pr.line_g2.G(np.array([0.1])))[0]
    raw = max(domination, renyi, cubic)
    assert r[0] == pytest.approx(raw * (1 - BOUND_MARGIN), rel=1e-12)


# ---- bad input: a bound that does not apply says why, and the next sound one is used ----


def test_infinite_fisher_information_falls_back():
    noise = create_noise("gennormal", beta=0.5)
    pr = ProvenRadius(noise, 100)
    assert "infinite Fisher information" in pr.notes["fisher-arcsin"]
    assert "not sub-Gaussian" in pr.notes["gaussian-domination"]
    (res,) = certified_radii(noise, 0.9, norms=(2,), dim=100)
    assert 0 < res.radius < res.radius_family and "renyi-divergence" in res.bound
    # Without the Renyi route the l1 bound divided by sqrt(d) is what is left.
    pr.renyi = None  # a fresh object, not the cached one certified_radii used
    r, name = pr.radii([0.9], [0.1], [2.0])[2.0]
    assert 0 < r[0] < res.radius and name[0].startswith("differential-l1")


def test_heavy_score_tail_is_not_gaussian_dominated():
    """beta = 3: the score 3|y|^2 has tails heavier than any Gaussian: no c, only Fisher."""
    pr = ProvenRadius(create_noise("gennormal", beta=3.0), 100)
    assert not math.isfinite(pr.c) and "gaussian-domination" in pr.notes


def _box(y):
    return torch.where(y.abs() <= 1, 0 * y, torch.full_like(y, -math.inf))


def test_density_without_score_falls_back_to_zero():
    """A discontinuous custom density (a box): no score, radius 0 with the reason, never the
    family value."""
    noise = CustomNoise(_box, support=(-1.0, 1.0))
    pr = ProvenRadius(noise, 10)
    assert "differential" in pr.notes
    (res,) = certified_radii(noise, 0.9, norms=(2,), dim=10)
    assert res.radius == 0.0 and "unavailable" in res.bound


def test_custom_noise_uses_autograd_score():
    """A custom Laplace density gives the built-in Laplace l1 bound (within grid accuracy);
    in l2 its score tail cannot be checked beyond the grid, so only Fisher's bound is used."""
    custom = CustomNoise(lambda y: -y.abs(), alpha=1.0)
    built = create_noise("laplace", alpha=1.0)
    pr = ProvenRadius(custom, 100)
    a = pr.radii(np.array([0.9]), np.array([0.1]), [1.0, 2.0])
    b = ProvenRadius(built, 100).radii(np.array([0.9]), np.array([0.1]), [1.0, 2.0])
    assert a[1.0][0][0] == pytest.approx(b[1.0][0][0], rel=1e-3)
    assert a[2.0][1][0] == "fisher-arcsin" and "gaussian-domination" in pr.notes
    assert "renyi-divergence unavailable" in pr.notes["renyi-divergence"]
    assert pr.fisher == pytest.approx(1.0, rel=1e-3)  # I = 1 / alpha^2 for Laplace


# ---- the look-ups ----


def test_sample_radius_and_curve_report_proven(tmp_path):
    noise = create_noise("laplace", sigma=0.5)
    look = SampleRadius(noise, 4, [1, 2, "inf"], points=20)
    p_a = np.array([0.7, 0.8, 0.95])
    proven, family = look(p_a, 1 - p_a), look.family(p_a, 1 - p_a)
    for p in (1.0, 2.0, math.inf):
        assert np.all(proven[p] <= family[p]) and np.all(proven[p] > 0)
        assert look.bound[p]
    assert np.all(proven[2.0] < family[2.0])  # Laplace in l2: not proven exact
    # The curve steps down to its grid; the per-sample bound is evaluated at p_A itself.
    assert np.all(look.curve.radius(p_a, 2) <= proven[2.0])
    assert np.all(look.curve.radius(p_a, 2) <= look.curve.radius_family(p_a, 2))
    assert look.curve.radius_family(p_a, 2).tolist() == family[2.0].tolist()


# ---- the Renyi-divergence route (Li et al. 2019) ----


@pytest.mark.parametrize("order", [1.1, 2.0, 4.0])
def test_renyi_threshold_is_the_lemmas_minimum(order):
    """-log(1 - p_A - p_B + 2 M) is the least D_order(Q || P) over class distributions Q whose
    top class is not P's: no Q on a fine grid of the 3-class simplex goes below it, and the
    lemma's optimiser (q_1 = q_2 = c M, q_3 = c p_3) attains it."""
    p = np.array([0.6, 0.3, 0.1])
    level = float(renyi_threshold(order, p[0], p[1]))

    def div(q):
        return np.log(np.sum(q**order * p ** (1 - order), axis=-1)) / (order - 1)

    g = np.linspace(1e-4, 1, 801)
    q1, q2 = np.meshgrid(g, g, indexing="ij")
    q = np.stack([q1, q2, 1 - q1 - q2], axis=-1)
    flipped = (q[..., 2] >= 0) & (q1 <= np.maximum(q2, q[..., 2]))
    assert div(q[flipped]).min() >= level * (1 - 1e-9)
    m = ((p[0] ** (1 - order) + p[1] ** (1 - order)) / 2) ** (1 / (1 - order))
    best = np.array([m, m, p[2]]) / (2 * m + p[2])
    assert div(best) == pytest.approx(level, rel=1e-9)
    # A larger p_A or a smaller p_B only raises it (the monotonicity that lets bounds stand in).
    assert renyi_threshold(order, 0.65, 0.3) > level > renyi_threshold(order, 0.6, 0.32)


def _laplace_divergence(order, t):
    """D_order(Lap(t, 1) || Lap(0, 1)) in closed form, written without cancellation."""
    a = order
    excess = (a * np.expm1((a - 1) * t) + (a - 1) * np.expm1(-a * t)) / (2 * a - 1)
    return np.log1p(excess) / (a - 1)


@pytest.mark.parametrize(
    "name, exact",
    [
        ("gaussian", lambda a, t: a * t**2),  # exp(-y^2): sigma^2 = 1/2
        ("laplace", _laplace_divergence),
        ("cauchy", lambda a, t: np.log1p(t**2 / 2) if a == 2.0 else None),  # chi^2 + 1
    ],
)
def test_renyi_divergence_is_an_upper_bound_of_closed_forms(name, exact):
    """The quadrature bound is above the closed form, and within 1e-4 of it, from t = 1e-7 to
    30 scales (where it is finite: large orders and shifts are given up as inf)."""
    noise = create_noise(name, alpha=1.0)
    t = np.geomspace(1e-7, 30, 40)
    table = renyi_table(noise, RENYI_ORDERS, t, 1.0)
    checked = 0
    for order, row in zip(RENYI_ORDERS, table, strict=True):
        truth = exact(order, t)
        if truth is None:
            continue
        fin = np.isfinite(row)
        assert np.all(row[fin] >= truth[fin] * (1 - 1e-12))
        assert np.all(row[fin] <= truth[fin] * (1 + 1e-4))
        checked += int(fin.sum())
    assert checked >= 39


@pytest.mark.parametrize("key", [k for k in NOISES if k not in ("gaussian", "uniform")])
def test_renyi_divergence_grows_with_the_shift(key):
    """The premise of the step bound (g <= G_(j+1) between grid points): for a symmetric density
    nonincreasing in |x|, the divergence is nondecreasing in the shift."""
    noise = make(key)
    t = np.geomspace(1e-4, 10, 30) * noise.alpha
    table = renyi_table(noise, (1.1, 2.0), t, noise.alpha)
    for row in table:
        fin = row[np.isfinite(row)]
        assert fin.size >= 20 and np.all(np.diff(fin) >= -1e-9 * fin[1:])


def test_renyi_gaussian_matches_li_closed_form():
    """Gaussian noise: D_order = order ||delta||^2 / (2 sigma^2) in every direction, so Li et al.'s
    radius is max over orders of sigma sqrt(2 level / order) in l1 and l2 (the axis is worst in
    l1, every direction alike in l2), that over sqrt(d) in l_inf. Within the grid step, below."""
    sigma, d = 0.5, 784
    rb = RenyiBound(create_noise("gaussian", sigma=sigma), d)
    p_a = np.array([0.6, 0.8, 0.9, 0.99, 0.999999])
    levels = np.stack([renyi_threshold(a, p_a, 1 - p_a) for a in RENYI_ORDERS])
    li = sigma * np.max(np.sqrt(2 * levels / np.array(RENYI_ORDERS)[:, None]), axis=0)
    for p, scale in ((1.0, 1.0), (2.0, 1.0), (math.inf, d**-0.5)):
        found = rb.radius(p_a, 1 - p_a, p)
        assert np.all(found <= li * scale) and np.all(found >= 0.99 * li * scale), (p, found)


def test_renyi_prefix_hull_against_brute_force():
    """h_(m+1)(u_m / d), the least concave majorant of (0, G_0), (u_j, G_(j+1)) for j <= m,
    evaluated at u_m / d, against the maximum over all chords of those points."""
    rng = np.random.default_rng(0)
    rb = RenyiBound.__new__(RenyiBound)
    rb.dim, rb._hulls = 7, {}
    rb.t = np.geomspace(0.01, 3, 60)
    rb.g = np.cumsum(rng.exponential(size=(1, 60)) * np.linspace(0.1, 3, 60) ** 2, axis=1)
    for p in (1.0, 2.0):
        value, slope = rb._hull(0, p)
        u = rb.t**p
        for m in range(0, 59, 7):
            xs = np.concatenate([[0.0], u[: m + 1]])
            ys = np.concatenate([[rb.g[0, 0]], rb.g[0, 1 : m + 2]])
            q = u[m] / rb.dim
            i, j = np.meshgrid(np.flatnonzero(xs <= q), np.flatnonzero(xs >= q), indexing="ij")
            span = np.where(xs[j] > xs[i], xs[j] - xs[i], 1.0)
            chords = ys[i] + (ys[j] - ys[i]) * np.where(xs[j] > xs[i], (q - xs[i]) / span, 0.0)
            assert value[m] == pytest.approx(chords.max(), rel=1e-12), (p, m)


def check_renyi_against_brute(key: str, dim: int, p_a: float, p_b: float) -> None:
    """Every direction is still robust a little inside the Renyi radius (l1, l2, l_inf)."""
    noise = make(key)
    rb = RenyiBound(noise, dim)
    count = DIRECTIONS[dim]
    for p in NORMS:
        radius = float(rb.radius(p_a, p_b, p)[0])
        assert radius > 0
        for v in directions(dim, p, count):
            gap = np_gap(noise, radius / (1 + BRUTE_RTOL[dim]) * v, p_a, p_b)
            assert gap > 0, (key, dim, p, p_a, v, radius)


@pytest.mark.parametrize("key", ["gennormal-0.5", "cauchy"])
def test_renyi_below_brute_force_d2(key):
    check_renyi_against_brute(key, 2, 0.9, 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in NOISES if k not in ("uniform",)])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("p_a, p_b", [(0.6, 0.4), (0.99, 0.005)])
def test_renyi_below_brute_force_all(key, dim, p_a, p_b):
    check_renyi_against_brute(key, dim, p_a, p_b)


# Family radii (sigma = 1, d = 3072, p_A = 0.9) from the exact engine, as in docs/soundness.md;
# `test_renyi_lifts_heavy_tails_all` recomputes them.
FAMILY_3072 = {"gennormal-0.5": (0.5861, 0.1711), "gennormal-0.75": (0.9528, 0.5633)}


@pytest.mark.parametrize("key", sorted(FAMILY_3072))
def test_renyi_lifts_heavy_tails(key):
    """Infinite or large Fisher information: the Renyi route reaches about 0.8 of the family
    value in l2 (0.02 and 0.69 before it), and beats the differential l1 bound in l1."""
    rb = RenyiBound(make(key), 3072)
    for p, family, floor in zip((1.0, 2.0), FAMILY_3072[key], (0.8, 0.77), strict=True):
        assert rb.radius(0.9, 0.1, p)[0] >= floor * family, (key, p)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(FAMILY_3072))
def test_renyi_lifts_heavy_tails_all(key):
    for res in certified_radii(make(key), 0.9, norms=NORMS, dim=3072):
        assert res.bound.startswith("renyi-divergence"), res
        assert res.radius >= (0.8 if res.norm == 1 else 0.77) * res.radius_family, res
        if res.norm != math.inf:
            family = FAMILY_3072[key][0 if res.norm == 1 else 1]
            assert res.radius_family == pytest.approx(family, rel=1e-3)
