"""`certified_radius`: one entry point for every radius method, with argument checks."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from unicr_pl.noises import Noise
from unicr_pl.radius.bounds import proven_results
from unicr_pl.radius.cache import BoundedLRU, env_limits
from unicr_pl.radius.checks import check_dim, check_norm, check_probabilities
from unicr_pl.radius.exact import ExactConfig, ExactEngine
from unicr_pl.radius.monte_carlo import draw_noise
from unicr_pl.radius.pso import PSOConfig, direction_radii, pso_radius

METHODS = ("exact", "pso")
# One engine holds ~14 MB of tables: a few recent ones are kept, bounded in count and bytes
# ($UNICR_ENGINE_CACHE_ITEMS, $UNICR_ENGINE_CACHE_MB; `_ENGINES.resize` at run time).
_ENGINES = BoundedLRU(*env_limits("UNICR_ENGINE_CACHE", items=8, megabytes=256))


@dataclass
class RadiusResult:
    """One certified radius and how it was obtained.

    `radius` is PROVEN: a sound lower bound over all directions of the l_p ball, named by
    `bound` (docs/soundness.md). `radius_family` is the structured-family minimum of `method`
    (an upper bound of the true radius, comparable to the UniCR paper); `tight` says the two
    coincide (the bound is exact, or within `unicr_pl.radius.bounds.TIGHT_RTOL`).
    """

    noise: str
    p_a: float
    p_b: float
    norm: float
    dim: int
    radius: float
    method: str
    seconds: float
    details: dict = field(default_factory=dict)
    radius_family: float = math.nan
    bound: str = ""
    tight: bool = False

    def to_json(self) -> dict:
        """JSON-safe dict (inf norms and radii become the string 'inf')."""
        out = asdict(self)
        for key in ("norm", "radius", "radius_family"):
            if math.isinf(out[key]):
                out[key] = "inf"
        return out


def _engine(noise: Noise) -> ExactEngine:
    # Engines tabulate the noise once (~10 ms); reuse them for repeated calls on one law.
    # Keyed by the law's identity (never id(noise), which Python reuses after a free).
    config = ExactConfig()
    key = (noise.identity(), repr(config))
    return _ENGINES.get_or_create(key, lambda: ExactEngine(noise, config))


def _refine(noise, p_a, p_b, p, dim, radius, k, cfg, seed, device) -> tuple[float, dict]:
    """The exact radius times the swarm's gain over the worst structured direction.

    The swarm starts on that direction (both signs for asymmetric noise) and around it. Its
    best direction is then re-measured against the start on *fresh* draws: on the search draws
    the minimum over particles is biased low by Monte Carlo noise alone, and the ratio of two
    nearby directions on shared fresh draws is not. The gain is at most 1, so the radius can
    only go down; it stays a Monte Carlo estimate (README, "Soundness").
    """
    v = torch.zeros(dim, dtype=torch.float64)
    v[:k] = 1.0  # [d] the worst structured direction, a (1, ..., 1, 0, ..., 0)
    starts = v[None] if noise.symmetric else torch.stack([v, -v])  # [m, d]
    seed = 0 if seed is None else int(seed)
    found = pso_radius(noise, p_a, p_b, p, dim, cfg, seed=seed, device=device, start=starts)
    fresh = draw_noise(noise, cfg.n, dim, seed + 1_000_003, device)  # [n, d]
    candidates = torch.cat([found["direction"][None], starts]).to(fresh.device)
    candidates = candidates / torch.linalg.vector_norm(candidates, ord=p, dim=-1, keepdim=True)
    costs = direction_radii(noise, fresh, candidates, p_a, p_b, cfg.rtol)  # [1 + m]
    best, start_cost = float(costs[0]), float(costs[1:].min())
    gain = min(1.0, best / start_cost) if 0 < start_cost < math.inf else 1.0
    return radius * gain, {"worst_k": k, "pso_gain": gain, "samples": cfg.n, "seed": seed}


def certified_radii(
    noise: Noise,
    p_a: float,
    p_b: float | None = None,
    norms=(2,),
    dim: int = 1,
    method: str = "exact",
    samples: int | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    pso: PSOConfig | None = None,
    refine: bool = False,
) -> list[RadiusResult]:
    """Certified radius of a smoothed prediction for several l_p norms.

    Args:
        noise: the smoothing noise (see `unicr_pl.noises.create_noise`).
        p_a: lower confidence bound of the top class's probability.
        p_b: upper bound of the runner-up's probability; None for the binary case 1 - p_A.
        norms: l_p orders in (0, inf] (numbers or 'inf').
        dim: input dimension d.
        method: 'exact' (structured search with high-precision laws, the default) or 'pso'
            (the paper's Monte Carlo + particle swarm).
        samples: Monte Carlo draws of the likelihood-ratio law ('pso' only).
        seed: seed of those draws ('pso' only; the exact method is deterministic).
        device: torch device for 'pso'.
        pso: swarm settings for 'pso' and for `refine`.
        refine: 'exact' only: search further with the swarm started at the worst structured
            direction, and scale the radius by the swarm's gain (see `_refine`).

    Returns:
        One RadiusResult per norm. p_A <= p_B (p_A <= 1/2 in the binary case) gives 0.
    """
    if not isinstance(noise, Noise):
        raise ValueError(f"noise must be a unicr_pl Noise, got {type(noise).__name__}")
    p_a, p_b = check_probabilities(p_a, p_b)
    ps = [check_norm(p) for p in norms]
    dim = check_dim(dim)
    if method not in METHODS:
        raise ValueError(f"unknown radius method {method!r}; valid: {', '.join(METHODS)}")
    if samples is not None and (int(samples) != samples or samples < 1):
        raise ValueError(f"samples must be an integer >= 1, got {samples}")
    if refine and method != "exact":
        raise ValueError(f"refine applies to method 'exact' only, got method {method!r}")
    cfg = pso or PSOConfig()
    if samples is not None:
        cfg = PSOConfig(**{**asdict(cfg), "n": int(samples)})
    start = time.perf_counter()
    if p_a <= p_b:
        found = {p: (0.0, {}) for p in ps}
    elif method == "exact":
        found = {}
        for p, (r, k) in _engine(noise).radius(p_a, p_b, ps, dim).items():
            found[p] = (r, {"worst_k": k})
            if refine and 0 < r < math.inf:
                found[p] = _refine(noise, p_a, p_b, p, dim, r, k, cfg, seed, device)
    else:
        found = {}
        for p in ps:
            out = pso_radius(noise, p_a, p_b, p, dim, cfg, seed=seed, device=device)
            found[p] = (out["radius"], {"samples": cfg.n, "seed": seed})
    proven = proven_results(noise, p_a, p_b, ps, dim, {p: r for p, (r, _) in found.items()})
    seconds = (time.perf_counter() - start) / max(1, len(ps))
    return [
        RadiusResult(
            noise.describe(),
            p_a,
            p_b,
            p,
            dim,
            proven[p][0],
            method,
            seconds,
            info,
            radius_family=r,
            bound=proven[p][1],
            tight=proven[p][2],
        )
        for p, (r, info) in found.items()
    ]


def certified_radius(
    noise: Noise, p_a: float, p_b: float | None = None, norm=2, dim: int = 1, **kwargs
) -> float:
    """The certified l_p radius as a float; see `certified_radii` for the arguments."""
    return certified_radii(noise, p_a, p_b, norms=(norm,), dim=dim, **kwargs)[0].radius
