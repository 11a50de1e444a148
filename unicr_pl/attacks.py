"""Attacks on the smoothed classifier at (and beyond) its certified radius (UniCR Table 6).

The attacked function is SmoothAdv's (Salman et al. 2019): the log of the average softmax of
the base classifier over m noisy copies of the input, the noise added in input space before the
normalisation layer exactly as in certification (expectation over transformation). PGD in l_inf
and l_2 and APGD (l_inf, l_2) come from torchattacks; torchattacks has no l_1 attack, so the
l_1 PGD step and the l_1-ball projection (Duchi et al. 2008) are written here. Whatever the
attack finds is only a direction: `rescale` gives it l_p norm exactly scale x radius, without
clipping to the data range, because the certificate is for the unclipped input space.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unicr_pl.noises import Noise

# attack -> the norms it supports (torchattacks' APGD has l_inf and l_2 only).
ATTACKS = {"pgd": (1.0, 2.0, math.inf), "apgd": (2.0, math.inf)}


class SmoothedLogProb(nn.Module):
    """log E_eps[softmax(base(normalize(x + eps)))], estimated on m fresh draws per call.

    Cross-entropy on these log-probabilities is SmoothAdv's loss, so any logits-based attack
    library attacks the smoothed classifier. `low` and `scale` map the attack's [0, 1] box
    back to input units: x = low + scale * u (a scalar map, so l_p norms scale by `scale`).
    """

    def __init__(self, base: nn.Module, noise: Noise, normalize: nn.Module, m: int) -> None:
        super().__init__()
        if m < 1:
            raise ValueError(f"m (noise draws per gradient) must be >= 1, got {m}")
        self.base, self.noise, self.normalize, self.m = base, noise, normalize, int(m)
        self.low, self.scale = 0.0, 1.0

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = self.low + self.scale * u
        b = x.shape[0]
        copies = x.unsqueeze(1).expand(b, self.m, *x.shape[1:]).reshape(b * self.m, *x.shape[1:])
        eps = self.noise.sample(copies.shape, None, copies.device, copies.dtype)
        probs = self.base(self.normalize(copies + eps)).softmax(dim=1).view(b, self.m, -1)
        return probs.mean(dim=1).clamp_min(1e-12).log()


def lp_norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    """Per-input l_p norm of a batch [B, ...] -> [B]."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def project_l1_ball(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each row of v [B, ...] onto {||w||_1 <= eps} (Duchi et al.
    2008, Fig. 1: sort |v|, find the threshold theta, soft-threshold)."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    flat = v.flatten(1)
    inside = flat.abs().sum(dim=1) <= eps
    mu = flat.abs().sort(dim=1, descending=True).values
    cums = mu.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((mu * ks) > (cums - eps)).sum(dim=1, keepdim=True)  # the last index that stays > 0
    theta = (cums.gather(1, rho - 1) - eps) / rho.to(v.dtype)
    w = flat.sign() * (flat.abs() - theta).clamp_min(0)
    return torch.where(inside.unsqueeze(1), flat, w).view_as(v)


def pgd_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int):
    """l_1 PGD (ART's norm=1 step): ascend the cross-entropy along grad / ||grad||_1 with step
    eps / 4, project onto the l_1 ball of radius eps; returns x + delta."""
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        step = grad / lp_norm(grad, 1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = project_l1_ball(delta.detach() + 0.25 * eps * step, eps)
    return x + delta


def rescale(delta: torch.Tensor, p: float, radius: torch.Tensor) -> torch.Tensor:
    """delta with each row's l_p norm set exactly to radius[i] (a zero row gets a constant
    direction, so the input still moves by the requested norm)."""
    norms = lp_norm(delta, p)
    zero = norms == 0
    if zero.any():
        delta = delta.clone()
        delta[zero] = 1.0
        norms = lp_norm(delta, p)
    shape = (-1, *[1] * (delta.dim() - 1))
    return delta * (radius / norms).view(shape)


def attack(
    name: str, model: SmoothedLogProb, x: torch.Tensor, y: torch.Tensor, p: float,
    radius: torch.Tensor, steps: int,
) -> torch.Tensor:  # fmt: skip
    """The perturbation delta [B, ...] of l_p norm exactly radius[i] found by attack `name`
    ('pgd' or 'apgd') on the smoothed model, for inputs x of true class y."""
    import torchattacks

    if p not in ATTACKS.get(name, ()):
        raise ValueError(f"no {name} attack for l_{p:g}; valid: {describe_attacks()}")
    eps = float(radius.max())
    # The library searches the box [0, 1]: map it onto the data range widened by eps, so the
    # box does not bind (the final delta is rescaled and not clipped anyway).
    model.low = float(x.min()) - eps
    model.scale = float(x.max()) + eps - model.low
    u, e = (x - model.low) / model.scale, eps / model.scale
    model.eval()
    if name == "pgd" and p == 1.0:
        u_adv = pgd_l1(model, u, y, e, steps)
    elif name == "pgd" and p == 2.0:
        u_adv = torchattacks.PGDL2(model, eps=e, alpha=e / 4, steps=steps)(u, y)
    elif name == "pgd":
        u_adv = torchattacks.PGD(model, eps=e, alpha=e / 4, steps=steps)(u, y)
    else:
        norm = "L2" if p == 2.0 else "Linf"
        u_adv = torchattacks.APGD(model, norm=norm, eps=e, steps=steps)(u, y)
    return rescale((u_adv - u).detach() * model.scale, p, radius)


def describe_attacks() -> str:
    """'pgd (l1, l2, linf), apgd (l2, linf)'."""
    label = lambda p: "linf" if math.isinf(p) else f"l{p:g}"  # noqa: E731
    return ", ".join(f"{a} ({', '.join(map(label, ps))})" for a, ps in ATTACKS.items())


__all__ = [
    "ATTACKS",
    "SmoothedLogProb",
    "attack",
    "describe_attacks",
    "lp_norm",
    "pgd_l1",
    "project_l1_ball",
    "rescale",
]
