"""Training losses that raise certified accuracy, for any noise (maths layer: plain torch).

One small function per method, all on the logits of m noisy copies of each input, shaped
[B, m, classes] (copy j of input i is row i * m + j of the flat batch, see `repeat_copies`):

    noise_aug     cross-entropy on every copy (Cohen et al., ICML 2019)
    consistency   + lbd * KL(mean prediction || each copy's) + eta * entropy of the mean
                  (Jeong & Shin, NeurIPS 2020)
    macer         NLL of the soft smoothed prediction + lbd * hinge on the certified radius
                  (Zhai et al., ICLR 2020); the radius is Cohen's closed form for Gaussian
                  noise and a differentiable interpolation of the cached p_A -> R curve
                  (`CurveRadius`) for every other noise
    smoothadv     PGD on the soft smoothed classifier (`smoothadv_attack`), then
                  cross-entropy on every copy of the adversarial input (Salman et al., 2019)

`method_config` checks a method's name and arguments (defaults: the papers' MNIST / LeNet
settings, docs/training-methods.md), `method_loss` dispatches. Never imports Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtr, ndtri

from unicr_pl.attacks import lp_norm
from unicr_pl.noises import Noise

Terms = dict[str, torch.Tensor]  # detached parts of a loss, for logging


# ---------------------------------------------------------------- configurations
@dataclass(frozen=True)
class NoiseAug:
    """Gaussian (here: any noise) data augmentation; m > 1 averages the loss over m copies."""

    name: ClassVar[str] = "noise_aug"
    m: int = 1

    def check(self) -> None:
        _check_m(self.name, self.m, 1)


@dataclass(frozen=True)
class Consistency:
    """Jeong & Shin (2020): m copies, lbd weighs the KL term, eta the entropy term."""

    name: ClassVar[str] = "consistency"
    m: int = 2
    lbd: float = 10.0
    eta: float = 0.5

    def check(self) -> None:
        _check_m(self.name, self.m, 2)
        _check_min(self.name, lbd=self.lbd, eta=self.eta)


@dataclass(frozen=True)
class Macer:
    """Zhai et al. (2020): m copies, lbd weighs the radius hinge, gamma is the hinge in units of
    Phi^-1(p_A) - Phi^-1(p_B), beta the inverse temperature of the soft top-2 (not the noise's
    beta); the hinge is off before epoch `start_epoch`; `radius`: proven or family."""

    name: ClassVar[str] = "macer"
    m: int = 16
    lbd: float = 16.0
    gamma: float = 8.0
    beta: float = 16.0
    start_epoch: int = 30
    radius: str = "proven"

    def check(self) -> None:
        _check_m(self.name, self.m, 1)
        _check_min(self.name, lbd=self.lbd, start_epoch=self.start_epoch)
        _check_min(self.name, 1e-12, gamma=self.gamma, beta=self.beta)
        if self.radius not in ("proven", "family"):
            raise ValueError(f"macer: radius must be proven or family, got {self.radius!r}")

    def lbd_at(self, epoch: int) -> float:
        """lbd from `start_epoch` on, 0 before (MACER's deferred start)."""
        return self.lbd if epoch >= self.start_epoch else 0.0


@dataclass(frozen=True)
class SmoothAdv:
    """Salman et al. (2019): m copies, PGD in l2 with `steps` steps of size 2 eps / steps; eps
    grows linearly to its value over the first `warmup` epochs."""

    name: ClassVar[str] = "smoothadv"
    m: int = 4
    eps: float = 255 / 256
    steps: int = 10
    warmup: int = 10

    def check(self) -> None:
        _check_m(self.name, self.m, 1)
        _check_min(self.name, eps=self.eps, warmup=self.warmup)
        _check_min(self.name, 1, steps=self.steps)

    def eps_at(self, epoch: int) -> float:
        """min(eps, (epoch + 1) eps / warmup): the warm-up of Salman et al.'s train_pgd.py."""
        return self.eps if self.warmup == 0 else min(self.eps, (epoch + 1) * self.eps / self.warmup)


MethodConfig = NoiseAug | Consistency | Macer | SmoothAdv
METHODS: dict[str, type] = {c.name: c for c in (NoiseAug, Consistency, Macer, SmoothAdv)}


def _check_m(method: str, m: int, least: int) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < least:
        raise ValueError(
            f"{method}: m (noisy copies per input) must be an integer >= {least}, got {m}"
        )


def _check_min(method: str, least: float = 0.0, **values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= least):
            raise ValueError(f"{method}: {key} must be a finite number >= {least:g}, got {value!r}")


def method_config(method: str, m: int | None = None, args: Mapping | None = None) -> MethodConfig:
    """The checked configuration of `method`: its paper defaults, `m` and `args` overriding.

    Raises ValueError (one line) for an unknown method (listing the valid ones), an unknown
    argument (listing the method's), or a value out of range (m < 1, ...).
    """
    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; valid methods: {', '.join(METHODS)}")
    cls = METHODS[method]
    args = dict(args or {})
    valid = [f.name for f in fields(cls) if f.name != "m"]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        hint = ", ".join(valid) or "none (only m)"
        raise ValueError(f"--method {method} has no argument {', '.join(unknown)}; valid: {hint}")
    if m is not None:
        args["m"] = m
    cfg = cls(**args)
    cfg.check()
    return cfg


# ---------------------------------------------------------------- shared pieces
def _full(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when it is in a half precision (bf16 / fp16 under autocast), else x."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def repeat_copies(x: torch.Tensor, m: int) -> torch.Tensor:
    """[B, ...] -> [B * m, ...], copy j of input i at row i * m + j (x itself when m = 1)."""
    return x if m == 1 else x.repeat_interleave(m, dim=0)


def smoothed_log_prob(logits: torch.Tensor) -> torch.Tensor:
    """log of the mean softmax over the copies: [B, m, C] -> [B, C] (SmoothAdv's soft g)."""
    return _full(logits).softmax(dim=-1).mean(dim=1).clamp_min(1e-20).log()


def noise_aug_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Mean cross-entropy over every copy: logits [B, m, C], labels y [B]."""
    b, m, c = logits.shape
    flat = _full(logits).reshape(b * m, c)
    loss = F.cross_entropy(flat, y.repeat_interleave(m) if m > 1 else y)
    return loss, {}


def consistency_loss(
    logits: torch.Tensor, y: torch.Tensor, lbd: float, eta: float
) -> tuple[torch.Tensor, Terms]:
    """Jeong & Shin's loss: mean CE over the copies + lbd * (1/m) sum_j KL(p_bar || p_j) +
    eta * H(p_bar), p_j the softmax of copy j and p_bar their mean (batch means)."""
    ce, _ = noise_aug_loss(logits, y)
    log_p = _full(logits).log_softmax(dim=-1)  # [B, m, C]
    p_bar = log_p.exp().mean(dim=1, keepdim=True)  # [B, 1, C]
    kl = F.kl_div(log_p, p_bar.expand_as(log_p), reduction="none").sum(-1).mean()
    entropy = -(p_bar * p_bar.clamp_min(1e-20).log()).sum(-1).mean()
    loss = ce + lbd * kl + eta * entropy
    return loss, {"ce": ce.detach(), "kl": kl.detach(), "entropy": entropy.detach()}


# ---------------------------------------------------------------- MACER
class GaussianRadius:
    """Cohen's R = sigma / 2 (Phi^-1(p_A) - Phi^-1(p_B)) (differentiable, float64) and the
    hinge's radius sigma gamma / 2 (MACER's closed form)."""

    def __init__(self, sigma: float) -> None:
        self.sigma = float(sigma)

    def __call__(self, p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
        ndtri = torch.special.ndtri
        return 0.5 * self.sigma * (ndtri(p_a.double()) - ndtri(p_b.double()))

    def margin(self, gamma: float) -> float:
        return 0.5 * self.sigma * gamma


class CurveRadius:
    """The binary radius R(p_A) (p_B = 1 - p_A) of a tabulated p_A -> R curve, differentiable.

    Piecewise linear in z = Phi^-1(p_A) between the knots (p_grid, radii), with (1/2, 0)
    prepended; exact for Gaussian noise (R = sigma z) and smooth in z for others. Below
    p_A = 1/2 the first segment is extended (R < 0: a surrogate, not a certificate), and p_A
    is clamped to [1 - p_max, p_max] (gradient 0 beyond). dR/dp_A = slope / phi(z), the
    derivative of the interpolant (tested against finite differences).
    """

    def __init__(self, p_grid: np.ndarray, radii: np.ndarray) -> None:
        p_grid, radii = np.asarray(p_grid, np.float64), np.asarray(radii, np.float64)
        if p_grid.shape != radii.shape or p_grid.ndim != 1 or np.any(np.diff(p_grid) <= 0):
            raise ValueError("CurveRadius needs increasing p_grid and radii of the same length")
        keep = p_grid > 0.5
        self.z = torch.tensor(np.concatenate([[0.0], ndtri(p_grid[keep])]))
        self.r = torch.tensor(np.concatenate([[0.0], radii[keep]]))
        self.p_max = float(p_grid[-1])

    def __call__(self, p_a: torch.Tensor, p_b: torch.Tensor | None = None) -> torch.Tensor:
        p = p_a.double().clamp(1 - self.p_max, self.p_max)
        z = torch.special.ndtri(p)
        knots, r = self.z.to(p.device), self.r.to(p.device)
        i = (torch.searchsorted(knots, z.detach()) - 1).clamp(0, len(knots) - 2)
        z0, z1, r0, r1 = knots[i], knots[i + 1], r[i], r[i + 1]
        return r0 + (r1 - r0) * (z - z0) / (z1 - z0)

    def margin(self, gamma: float) -> float:
        """R at p_A = Phi(gamma / 2): where the Gaussian hinge of the binary case ends."""
        return float(self(torch.tensor([ndtr(gamma / 2)]))[0])


RadiusFn = GaussianRadius | CurveRadius


def macer_radius(noise: Noise, dim: int, radius: str = "proven") -> RadiusFn:
    """MACER's differentiable l2 radius for `noise` in dimension `dim`: Cohen's closed form for
    Gaussian noise, else a `CurveRadius` on the cached curve (`radius`: proven or family) on
    the grid certification uses (the same cache file when certifying with --norms 2).

    Raises ValueError (one line) when the curve cannot be built or is 0 for every p_A.
    """
    from unicr_pl.radius import RadiusCurve
    from unicr_pl.radius.bounds import proven_radius
    from unicr_pl.radius.curve import default_p_grid

    if noise.is_gaussian:
        return GaussianRadius(noise.sigma)
    what = f"the l2 p_A -> radius curve of {noise.describe()} (d = {dim})"
    try:
        proven_radius(noise, dim)  # cached; fails in a second where the curve would fail late
        curve = RadiusCurve(noise, dim, ["2"], default_p_grid(4000, p_max=1 - 1e-7))
        grid = curve.p_grid
        radii = curve.radius(grid, 2) if radius == "proven" else curve.radius_family(grid, 2)
    except (ValueError, ArithmeticError, RuntimeError) as err:
        raise ValueError(f"macer cannot build {what}: {err}") from None
    if not np.all(np.isfinite(radii)) or not np.any(radii > 0):
        raise ValueError(
            f"macer: the {radius} radius of {what} is 0 or not finite for every p_A: nothing "
            "to maximise (try --model.method_args '{radius: family}' or another noise)"
        )
    return CurveRadius(grid, radii)


def macer_loss(
    logits: torch.Tensor, y: torch.Tensor, radius_fn: RadiusFn, lbd: float, gamma: float,
    beta: float,
) -> tuple[torch.Tensor, Terms]:  # fmt: skip
    """MACER: (sum_i -log g_soft(x_i)_y + lbd * sum_i hinge_i) / B.

    g_soft is the mean softmax over the m copies; the hinge uses the top-2 of the mean of
    softmax(beta * logits): for inputs whose top class is y, (R_gamma - R)_+ with R =
    radius_fn(p_A, p_B) and R_gamma = radius_fn.margin(gamma); inputs with p_A = 1 or p_B = 0
    (infinite radius) are left out, as in the paper.
    """
    b = logits.shape[0]
    logits = _full(logits)
    g_soft = logits.softmax(dim=-1).mean(dim=1)
    ce = F.nll_loss((g_soft + 1e-10).log(), y, reduction="sum")
    hinge = torch.zeros((), dtype=ce.dtype, device=ce.device)
    if lbd > 0:
        top2 = (beta * logits).softmax(dim=-1).mean(dim=1).topk(2, dim=-1)
        p_a, p_b = top2.values[:, 0], top2.values[:, 1]
        valid = (top2.indices[:, 0] == y) & (p_a < 1) & (p_b > 0)
        # Invalid rows get harmless stand-ins: no inf / nan in the forward or the gradient.
        radius = radius_fn(torch.where(valid, p_a, 0.75), torch.where(valid, p_b, 0.25))
        gap = radius_fn.margin(gamma) - radius
        hinge = torch.where(valid & (gap >= 0), gap, 0.0).sum().to(ce.dtype)
    loss = (ce + lbd * hinge) / b
    return loss, {"ce": ce.detach() / b, "radius_hinge": hinge.detach() / b}


# ---------------------------------------------------------------- SmoothAdv
def smoothadv_attack(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    noise: torch.Tensor, eps: float, steps: int,
) -> torch.Tensor:  # fmt: skip
    """SmoothAdv's l2 PGD on the soft smoothed classifier, noise held fixed.

    Ascends -log g_soft(x')_y, g_soft the mean softmax of forward(x' + noise_j) over the m
    draws noise [B * m, ...] (rows as `repeat_copies`), by `steps` steps of 2 eps / steps
    along the l2-normalised gradient, projecting onto ||x' - x||_2 <= eps; returns x' [B, ...]
    (detached). No clipping to a data box: the certificate is for the unclipped input space.
    """
    b = x.shape[0]
    m = noise.shape[0] // b
    x0 = x.detach()
    if eps == 0:
        return x0
    shape = (-1, *[1] * (x.dim() - 1))
    adv = x0.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = forward(repeat_copies(adv, m) + noise).view(b, m, -1)
        loss = F.nll_loss(smoothed_log_prob(logits), y)
        (grad,) = torch.autograd.grad(loss, adv)
        step = grad / (lp_norm(grad, 2).view(shape) + 1e-12)
        delta = adv.detach() + (2 * eps / steps) * step - x0
        delta = delta * (eps / lp_norm(delta, 2).clamp_min(eps)).view(shape)
        adv = x0 + delta
    return adv.detach()


# ---------------------------------------------------------------- dispatch
def method_loss(
    cfg: MethodConfig, logits: torch.Tensor, y: torch.Tensor, epoch: int,
    radius_fn: RadiusFn | None = None,
) -> tuple[torch.Tensor, Terms]:  # fmt: skip
    """The training loss of method `cfg` on the logits [B, m, C] of the m noisy copies (for
    SmoothAdv: the copies of the adversarial inputs), at epoch `epoch` (0-based)."""
    if isinstance(cfg, Consistency):
        return consistency_loss(logits, y, cfg.lbd, cfg.eta)
    if isinstance(cfg, Macer):
        if radius_fn is None:
            raise ValueError("macer needs a radius function (macer_radius)")
        return macer_loss(logits, y, radius_fn, cfg.lbd_at(epoch), cfg.gamma, cfg.beta)
    return noise_aug_loss(logits, y)  # noise_aug, and smoothadv on its adversarial copies


__all__ = [
    "METHODS",
    "Consistency",
    "CurveRadius",
    "GaussianRadius",
    "Macer",
    "MethodConfig",
    "NoiseAug",
    "SmoothAdv",
    "consistency_loss",
    "macer_loss",
    "macer_radius",
    "method_config",
    "method_loss",
    "noise_aug_loss",
    "repeat_copies",
    "smoothadv_attack",
    "smoothed_log_prob",
]
