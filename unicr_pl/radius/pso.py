"""The paper's radius method: Monte Carlo law + scalar search + particle swarm (Sec. 3.1, App. C).

Each particle is a direction v (kept at unit l_p norm, so its cost is the boundary scale
lambda(v) = ||lambda v||_p). Initial positions follow Appendix C.3: one-hot axes for p < inf,
the all-ones diagonal for p = inf, each with a small random jitter, so that the swarm starts
at the known worst cases of iid symmetric noise and can only move to smaller radii.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unicr_pl.noises import Noise
from unicr_pl.radius.monte_carlo import draw_noise, monte_carlo_gap, scalar_search


@dataclass
class PSOConfig:
    """Swarm and Monte Carlo settings (the official scripts used 4 particles x 3 iterations)."""

    n: int = 2000  # Monte Carlo draws of the likelihood-ratio law (fresh per call)
    particles: int = 8
    iterations: int = 5
    inertia: float = 0.7
    cognitive: float = 1.5
    social: float = 1.5
    jitter: float = 1e-3  # size of the random initial offsets, relative to the unit direction
    rtol: float = 1e-4  # bisection tolerance on lambda


def _unit(v: torch.Tensor, p: float) -> torch.Tensor:
    norms = torch.linalg.vector_norm(v, ord=p, dim=-1, keepdim=True).clamp_min(1e-300)
    return v / norms


def initial_positions(particles: int, dim: int, p: float, jitter: float, gen, device, dtype):
    """Appendix C.3: axes for p < inf, the diagonal for p = inf, plus a small random jitter."""
    if math.isinf(p):
        base = torch.ones(particles, dim, device=device, dtype=dtype)
    else:
        base = torch.zeros(particles, dim, device=device, dtype=dtype)
        base[torch.arange(particles), torch.arange(particles) % dim] = 1.0
    # Per-coordinate offsets of size jitter / d: the offset's l1 mass stays ~jitter in any d.
    noise = jitter / dim * torch.rand(particles, dim, device=device, dtype=dtype, generator=gen)
    # The first particle stays exactly on the symmetric position.
    noise[0] = 0
    return _unit(base + noise, p)


def positions_around(start: torch.Tensor, particles: int, dim: int, p: float, spread: float, gen):
    """Particles around the given start directions: [P, d] at unit l_p norm, and how many of
    them sit exactly on a start. The others (cycling through the starts) are moved by a random
    offset of l_p norm `spread` (relative to the unit start), far enough to explore."""
    start = _unit(
        torch.as_tensor(start, dtype=torch.float64, device=gen.device).reshape(-1, dim), p
    )
    m = start.shape[0]
    if m > particles:
        raise ValueError(f"{m} start directions for {particles} particles")
    base = start[torch.arange(particles, device=gen.device) % m]  # [P, d]
    offset = torch.randn(base.shape, dtype=base.dtype, device=base.device, generator=gen)
    offset = spread * _unit(offset, p)
    offset[:m] = 0
    return _unit(base + offset, p), m


def direction_radii(
    noise: Noise, eps: torch.Tensor, directions: torch.Tensor, p_a: float, p_b: float, rtol: float
) -> torch.Tensor:
    """||lambda v||_p at the boundary along each unit l_p direction v [P, d], on draws eps."""

    def gap(delta: torch.Tensor) -> torch.Tensor:
        return monte_carlo_gap(noise, eps, delta, p_a, p_b)

    # v has unit l_p norm, so the radius of the scaled point is lambda itself.
    return scalar_search(gap, directions, rtol=rtol)


def pso_radius(
    noise: Noise,
    p_a: float,
    p_b: float,
    p: float,
    dim: int,
    config: PSOConfig | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    start: torch.Tensor | None = None,
    start_spread: float = 0.1,
) -> dict:
    """Certified l_p radius by the paper's two-phase optimisation (Eq. 4).

    Args:
        start: [d] or [m, d] directions to start from instead of Appendix C.3's (e.g. the
            exact engine's worst structured direction); the first m particles sit exactly on
            them, the others at a relative l_p distance `start_spread` around them.

    Returns:
        dict with `radius` (the smallest ||lambda v||_p found), `direction` (that v, on CPU)
        and `start_radius` (the smallest radius among the exact start positions).
    """
    cfg = config or PSOConfig()
    eps = draw_noise(noise, cfg.n, dim, seed, device, dtype)  # [n, d], fixed during the search
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed) + 1)

    def cost(pos: torch.Tensor) -> torch.Tensor:
        return direction_radii(noise, eps, pos, p_a, p_b, cfg.rtol)

    if start is None:
        pos = initial_positions(cfg.particles, dim, p, cfg.jitter, gen, device, dtype)  # [P, d]
        exact_starts = 1
    else:
        pos, exact_starts = positions_around(start, cfg.particles, dim, p, start_spread, gen)
        pos = pos.to(dtype=dtype)
    vel = torch.zeros_like(pos)
    best_pos, best_cost = pos.clone(), cost(pos)  # per particle
    start_radius = float(best_cost[:exact_starts].min())
    g = int(torch.argmin(best_cost))
    for _ in range(cfg.iterations):
        r1 = torch.rand(pos.shape, device=device, dtype=dtype, generator=gen)
        r2 = torch.rand(pos.shape, device=device, dtype=dtype, generator=gen)
        vel = (
            cfg.inertia * vel
            + cfg.cognitive * r1 * (best_pos - pos)
            + cfg.social * r2 * (best_pos[g] - pos)
        )
        # Keep the swarm moving even when all particles sit on the best position.
        kick = torch.randn(pos.shape, device=device, dtype=dtype, generator=gen)
        vel = vel + cfg.jitter / dim * kick
        pos = _unit(pos + vel, p)
        c = cost(pos)
        better = c < best_cost
        best_pos[better], best_cost[better] = pos[better], c[better]
        g = int(torch.argmin(best_cost))
    return {
        "radius": float(best_cost[g]),
        "direction": best_pos[g].cpu(),
        "start_radius": start_radius,
    }
