"""unicr_pl.losses: each training method's loss against a plain oracle (hand computations,
Cohen's formula, finite differences), the SmoothAdv attack, and the checks of bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ndtri
from scipy.stats import norm

from unicr_pl.losses import (
    METHODS,
    CurveRadius,
    GaussianRadius,
    Macer,
    SmoothAdv,
    consistency_loss,
    macer_loss,
    macer_radius,
    method_config,
    method_loss,
    noise_aug_loss,
    repeat_copies,
    smoothadv_attack,
    smoothed_log_prob,
)
from unicr_pl.noises import create_noise


def logits_and_labels(b=5, m=3, c=4, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, m, c, generator=gen, dtype=dtype), torch.randint(
        0, c, (b,), generator=gen
    )


# ---------------------------------------------------------------- configuration, bad input
def test_defaults_are_the_papers():
    assert method_config("noise_aug").m == 1
    assert method_config("consistency") == METHODS["consistency"](m=2, lbd=10.0, eta=0.5)
    macer = method_config("macer")
    assert (macer.m, macer.lbd, macer.gamma, macer.beta) == (16, 16.0, 8.0, 16.0)
    adv = method_config("smoothadv")
    assert (adv.m, adv.eps, adv.steps, adv.warmup) == (4, 255 / 256, 10, 10)


@pytest.mark.parametrize(
    "method,m,args,message",
    [
        ("pgd", None, {}, "unknown --method 'pgd'; valid methods: noise_aug, consistency, macer"),
        (
            "noise_aug",
            0,
            {},
            "noise_aug: m (noisy copies per input) must be an integer >= 1, got 0",
        ),
        ("macer", -2, {}, "must be an integer >= 1, got -2"),
        ("consistency", 1, {}, "consistency: m (noisy copies per input) must be an integer >= 2"),
        ("consistency", None, {"gamma": 1}, "--method consistency has no argument gamma; valid"),
        ("macer", None, {"lbd": -1.0}, "macer: lbd must be a finite number >= 0"),
        ("macer", None, {"radius": "exact"}, "radius must be proven or family"),
        ("smoothadv", None, {"steps": 0}, "smoothadv: steps must be a finite number >= 1"),
        ("smoothadv", None, {"eps": math.nan}, "smoothadv: eps must be a finite number >= 0"),
    ],
)
def test_bad_configuration_is_one_line(method, m, args, message):
    with pytest.raises(ValueError) as err:
        method_config(method, m, args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_deferred_start_and_warm_up():
    cfg = Macer(start_epoch=3)
    assert [cfg.lbd_at(e) for e in (0, 2, 3, 9)] == [0.0, 0.0, cfg.lbd, cfg.lbd]
    adv = SmoothAdv(eps=1.0, warmup=4)
    assert [adv.eps_at(e) for e in (0, 1, 3, 7)] == [0.25, 0.5, 1.0, 1.0]
    assert SmoothAdv(eps=1.0, warmup=0).eps_at(0) == 1.0


def test_repeat_copies_layout():
    x = torch.arange(6.0).view(3, 2)
    assert repeat_copies(x, 1) is x
    r = repeat_copies(x, 4)
    for i in range(3):
        for j in range(4):
            assert torch.equal(r[i * 4 + j], x[i])


# ---------------------------------------------------------------- noise_aug, consistency
def test_noise_aug_is_cross_entropy_over_every_copy():
    logits, y = logits_and_labels()
    loss, _ = noise_aug_loss(logits, y)
    by_hand = np.mean(
        [-F.log_softmax(logits[i, j], 0)[y[i]].item() for i in range(5) for j in range(3)]
    )
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)


def test_consistency_matches_a_hand_computation():
    logits, y = logits_and_labels()
    lbd, eta = 10.0, 0.5
    loss, terms = consistency_loss(logits, y, lbd, eta)
    kl, ent, ce = [], [], []
    for i in range(5):
        p = [np.exp(logits[i, j].numpy()) / np.exp(logits[i, j].numpy()).sum() for j in range(3)]
        mean = sum(p) / 3
        kl.append(np.mean([np.sum(mean * np.log(mean / pj)) for pj in p]))
        ent.append(-np.sum(mean * np.log(mean)))
        ce += [-math.log(pj[y[i]]) for pj in p]
    assert terms["kl"].item() == pytest.approx(np.mean(kl), rel=1e-10)
    assert terms["entropy"].item() == pytest.approx(np.mean(ent), rel=1e-10)
    expected = np.mean(ce) + lbd * np.mean(kl) + eta * np.mean(ent)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_consistency_kl_vanishes_for_identical_copies():
    logits, y = logits_and_labels(m=1)
    same = logits.expand(5, 4, 4).clone()
    _, terms = consistency_loss(same, y, 10.0, 0.5)
    assert terms["kl"].abs().item() < 1e-12


# ---------------------------------------------------------------- MACER radius
def test_gaussian_radius_is_cohens_formula():
    p_a = torch.tensor([0.6, 0.9, 0.999], dtype=torch.float64)
    p_b = torch.tensor([0.3, 0.05, 1e-4], dtype=torch.float64)
    r = GaussianRadius(0.5)(p_a, p_b)
    expected = 0.25 * (norm.ppf(p_a.numpy()) - norm.ppf(p_b.numpy()))
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-12)
    assert GaussianRadius(0.5).margin(8.0) == pytest.approx(2.0)


def gaussian_curve(sigma=0.5, dim=1):  # d = 1: a one-k curve, built in a second
    from unicr_pl.radius import RadiusCurve
    from unicr_pl.radius.curve import default_p_grid

    noise = create_noise("gaussian", sigma=sigma)
    curve = RadiusCurve(noise, dim, ["2"], default_p_grid(40), cache_dir=None)
    return curve, CurveRadius(curve.p_grid, curve.radius_family(curve.p_grid, 2))


def test_curve_radius_of_a_gaussian_curve_is_cohens_binary_radius():
    curve, fn = gaussian_curve()
    p = torch.tensor([0.55, 0.8, 0.95, 0.999, 0.99999], dtype=torch.float64, requires_grad=True)
    r = fn(p)
    exact = 0.5 * ndtri(p.detach().numpy())
    # the curve is the engine's value less its margin: slightly below, never above
    assert np.all(r.detach().numpy() <= exact + 1e-12)
    np.testing.assert_allclose(r.detach().numpy(), exact, rtol=2e-3)
    (grad,) = torch.autograd.grad(r.sum(), p)
    z = ndtri(p.detach().numpy())
    np.testing.assert_allclose(grad.numpy(), 0.5 / norm.pdf(z), rtol=3e-3)  # sigma / phi(z)
    assert fn.margin(8.0) == pytest.approx(0.5 * 8.0 / 2, rel=2e-3)


def test_curve_radius_gradient_matches_finite_differences():
    p_grid = norm.cdf(np.linspace(0.05, 4.5, 40))
    radii = np.sqrt(ndtri(p_grid)) * 0.3 + 0.05 * ndtri(p_grid) ** 2  # smooth, increasing
    fn = CurveRadius(p_grid, radii)
    gen = np.random.default_rng(0)
    p = torch.tensor(norm.cdf(gen.uniform(-1.0, 4.4, 30)), requires_grad=True)
    (grad,) = torch.autograd.grad(fn(p).sum(), p)
    h = 1e-5 * torch.minimum(p, 1 - p).detach()  # inside one linear piece of z
    fd = (fn(p.detach() + h) - fn(p.detach() - h)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-5)
    assert torch.all(grad > 0)  # the surrogate grows with p_A, also below 1/2
    # at the knots the interpolant takes the tabulated values
    np.testing.assert_allclose(fn(torch.tensor(p_grid)).numpy(), radii, rtol=1e-12)


def test_curve_radius_is_clamped_beyond_the_grid():
    p_grid = norm.cdf(np.linspace(0.1, 3.0, 10))
    fn = CurveRadius(p_grid, ndtri(p_grid))
    p = torch.tensor([1.0, 1 - 1e-12], dtype=torch.float64, requires_grad=True)
    r = fn(p)
    (grad,) = torch.autograd.grad(r.sum(), p)
    assert torch.allclose(r, torch.tensor(3.0, dtype=torch.float64)) and torch.all(grad == 0)


def test_macer_radius_picks_the_closed_form_for_gaussian_noise():
    fn = macer_radius(create_noise("gaussian", sigma=0.25), 784)
    assert isinstance(fn, GaussianRadius) and fn.sigma == 0.25
    gennormal2 = create_noise("gennormal", beta=2.0, sigma=0.5)
    assert isinstance(macer_radius(gennormal2, 784), GaussianRadius)


# ---------------------------------------------------------------- MACER loss
def macer_oracle(logits, y, sigma, lbd, gamma, beta):
    """The MACER paper's loss, written with numpy / scipy on a float64 copy."""
    z = logits.detach().numpy()
    b = z.shape[0]
    soft = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ce = -np.sum(np.log(soft.mean(1)[np.arange(b), y.numpy()] + 1e-10))
    hot = np.exp(beta * z) / np.exp(beta * z).sum(-1, keepdims=True)
    g = hot.mean(1)
    rl = 0.0
    for i in range(b):
        order = np.argsort(-g[i])
        if order[0] != y[i]:
            continue
        xi = norm.ppf(g[i, order[0]]) - norm.ppf(g[i, order[1]])
        if np.isfinite(xi) and xi <= gamma:
            rl += sigma / 2 * (gamma - xi)
    return (ce + lbd * rl) / b, rl / b


def test_macer_gaussian_matches_the_papers_loss():
    logits, y = logits_and_labels(b=40, m=4, c=3, seed=1)
    logits = logits * 0.3  # soft enough that most inputs sit inside the hinge
    loss, terms = macer_loss(logits, y, GaussianRadius(0.25), 12.0, 8.0, 16.0)
    expected, hinge = macer_oracle(logits, y, 0.25, 12.0, 8.0, 16.0)
    assert hinge > 0  # the hinge is active for some inputs
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert terms["radius_hinge"].item() == pytest.approx(hinge, rel=1e-9)


def test_macer_gradient_matches_finite_differences():
    logits, y = logits_and_labels(b=6, m=3, c=3, seed=2)
    logits = (logits * 0.3).requires_grad_(True)
    p_grid = norm.cdf(np.linspace(0.02, 4.8, 300))
    curve = CurveRadius(p_grid, 0.4 * np.log1p(ndtri(p_grid)))  # a non-Gaussian shape

    def f(z):
        return macer_loss(z, y, curve, 16.0, 8.0, 4.0)[0]

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_macer_leaves_out_wrong_and_saturated_inputs():
    logits = torch.tensor([[[5.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]], [[200.0, 0.0, 0.0]]])
    y = torch.tensor([1, 1, 0])  # input 0 wrong, input 2 has p_A = 1 under beta
    _, terms = macer_loss(logits, y, GaussianRadius(1.0), 1.0, 8.0, 16.0)
    _, only_1 = macer_loss(logits[1:2], y[1:2], GaussianRadius(1.0), 1.0, 8.0, 16.0)
    assert terms["radius_hinge"].item() * 3 == pytest.approx(only_1["radius_hinge"].item())
    g = (logits.clone().requires_grad_(True),)
    loss = macer_loss(g[0], y, GaussianRadius(1.0), 1.0, 8.0, 16.0)[0]
    (grad,) = torch.autograd.grad(loss, g)
    assert torch.all(torch.isfinite(grad))


def test_macer_deferred_start_is_the_soft_classification_loss():
    logits, y = logits_and_labels()
    cfg = Macer(start_epoch=2)
    early, _ = method_loss(cfg, logits, y, 1, GaussianRadius(0.25))
    soft_nll = F.nll_loss((logits.softmax(-1).mean(1) + 1e-10).log(), y)
    assert early.item() == pytest.approx(soft_nll.item(), rel=1e-12)
    late, _ = method_loss(cfg, logits * 0.2, y, 2, GaussianRadius(0.25))
    assert late.item() > F.nll_loss(((logits * 0.2).softmax(-1).mean(1) + 1e-10).log(), y).item()


def test_macer_curve_failure_is_one_line():
    def box(y):  # a flat density: no score, no proven bound from the differential method
        return torch.where(y.abs() <= 1, torch.zeros_like(y), torch.full_like(y, -torch.inf))

    noise = create_noise("custom", log_density=box, sigma=0.5)
    with pytest.raises(ValueError) as err:
        macer_radius(noise, 16, "proven")
    assert str(err.value).startswith("macer") and "\n" not in str(err.value)


# ---------------------------------------------------------------- SmoothAdv
def smooth_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    )


def smoothed_ce(model, x, y, noise):
    m = noise.shape[0] // x.shape[0]
    with torch.no_grad():
        logits = model(repeat_copies(x, m) + noise).view(x.shape[0], m, -1)
        return F.nll_loss(smoothed_log_prob(logits), y, reduction="none")


def test_smoothadv_stays_in_the_ball_and_raises_the_loss():
    model = smooth_model()
    x, y = torch.randn(8, 1, 3, 4), torch.randint(0, 3, (8,))
    noise = 0.25 * torch.randn(8 * 4, 1, 3, 4)
    eps = 0.5
    x_adv = smoothadv_attack(model, x, y, noise, eps, steps=5)
    dist = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.all(dist <= eps * (1 + 1e-6)) and torch.all(dist > 0)
    before, after = smoothed_ce(model, x, y, noise), smoothed_ce(model, x_adv, y, noise)
    assert torch.all(after > before)
    assert all(p.grad is None for p in model.parameters())  # the attack trains nothing


def test_smoothadv_zero_eps_is_the_input():
    model = smooth_model()
    x, y = torch.randn(2, 1, 3, 4), torch.tensor([0, 1])
    assert torch.equal(smoothadv_attack(model, x, y, torch.zeros(4, 1, 3, 4), 0.0, 3), x)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_config_files_state_the_defaults(name):
    """configs/method/<name>.yaml documents exactly the code's defaults."""
    import dataclasses
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "method" / f"{name}.yaml"
    model = yaml.safe_load(path.read_text())["model"]
    assert model["method"] == name
    stated = {"m": model["m"], **(model.get("method_args") or {})}
    assert stated == dataclasses.asdict(METHODS[name]())
