"""I-OPT: per-input noise optimisation by hill climbing (paper Sec. 4.2, Algorithm 3).

Starting from the training noise, each parameter (sigma, beta of the family) is moved by +-step
inside its bounds; a move is kept when the candidate's radius, estimated on *fresh* draws, is
larger. Unlike the official scripts, every candidate is recorded (`IOPTResult.history`; dataset
certification writes it, one JSON line per input, to `<out>.iopt.jsonl` through
`results.HistoryWriter`), a bound on one side does not stop the search (the other side is still
tried), and passes repeat until none improves.

Prediction-preserving (Eq. 34): the class is fixed by the starting noise (or by the base
classifier on the clean input when the model was trained without noise); a candidate whose
smoothed prediction differs is rejected, and the final result abstains rather than report a
radius for another class.

What the certificate means. With `sound=True` the chosen noise is only *selected* on the
search's draws; p_A is then bounded on n fresh draws at level alpha0, so the radius is a valid
certificate for the smoothed classifier g built with that (now fixed) noise, at this input.
It is *not* a certificate for the input-dependent classifier x -> g_{mu(x)}(x): a perturbed
input would choose another noise, and no radius for that adaptive classifier follows (see the
literature on input-dependent randomized smoothing). With `sound=False` the reported radius is
the paper's: the best of the search's own estimates, which is optimistically biased.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from unicr_pl.noises import Noise, create_noise
from unicr_pl.smoothing import (
    ABSTAIN,
    SmoothedClassifier,
    clopper_pearson_lower,
    sample_seed,
)

RadiusFn = Callable[[Noise, float], float]  # (noise, p_A) -> radius for the chosen norm


@dataclass
class IOPTConfig:
    """Search space and budget of the hill climbing."""

    family: str = "gennormal"
    steps: dict = field(default_factory=lambda: {"sigma": 0.05, "beta": 0.25})
    bounds: dict = field(default_factory=lambda: {"sigma": (0.02, 4.0), "beta": (0.25, 5.0)})
    rounds: int = 10  # passes over the parameters at most
    n_select: int = 1000  # fresh draws per candidate
    sound: bool = True  # bound p_A on fresh draws after the search

    def columns(self) -> tuple[str, ...]:
        """Result-file columns holding the chosen parameters (iopt_sigma, iopt_beta, ...)."""
        return tuple(f"iopt_{k}" for k in self.steps)


@dataclass
class IOPTResult:
    params: dict
    prediction: int
    p_a: float
    radius: float
    history: list[dict]

    def record(self, **context) -> dict:
        """The search of one input as a JSON-ready dict for the history file: `context` (idx,
        label, ...), the choice, and every candidate tried in order (its parameters, p_A on its
        own draws, radius, top class; `skipped` for a step outside the bounds, `final` for the
        fresh-draw estimate of the chosen noise)."""
        return {
            **context,
            "prediction": int(self.prediction),
            "params": {k: float(v) for k, v in self.params.items()},
            "p_a": float(self.p_a),
            "radius": float(self.radius),
            "candidates": [{k: _plain(v) for k, v in h.items()} for h in self.history],
        }


def _plain(value):
    """numpy scalars as Python numbers (json refuses them)."""
    return value.item() if isinstance(value, np.generic) else value


def iopt(
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    start: dict,
    reference_class: int,
    radius_fn: RadiusFn,
    n: int,
    alpha0: float,
    cfg: IOPTConfig,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    index: int = 0,
) -> IOPTResult:
    """Hill climbing over the noise of one input x [1, ...]; see the module docstring.

    With `seed`, each candidate's draws are seeded by (seed, index, stage, candidate) (stage 2
    for the search, 3 for the final fresh draws), so the result of input `index` does not
    depend on what ran before it; otherwise all draws come from `generator` in turn.
    """
    base_noise = smoothed.noise
    history: list[dict] = []

    def evaluate(params: dict, draws: int, stage: int = 2) -> dict:
        smoothed.noise = create_noise(cfg.family, **params)
        seeds = None
        if seed is not None:  # the candidate as integers (parameters sit on a 1e-6 grid)
            key = [round(params[k] * 1e6) for k in sorted(params)]
            seeds = [sample_seed(seed, index, stage, *key)]
        counts = smoothed.counts(x, draws, generator, seeds=seeds, indices=[index])
        counts = counts[0].cpu().numpy()
        top = int(np.argmax(counts))
        p_a = float(clopper_pearson_lower(counts[reference_class], draws, alpha0))
        valid = top == reference_class and p_a > 0.5
        radius = radius_fn(smoothed.noise, p_a) if valid else 0.0
        entry = {**params, "p_a": p_a, "radius": radius, "top": top, "valid": valid}
        history.append(entry)
        return entry

    try:
        best = evaluate(dict(start), cfg.n_select)
        for _ in range(cfg.rounds):
            improved = False
            for name, step in cfg.steps.items():
                lo, hi = cfg.bounds[name]
                for direction in (1, -1):
                    value = round(best[name] + direction * step, 10)
                    if not lo <= value <= hi:
                        history.append({**_params(best, cfg), name: value, "skipped": "bound"})
                        continue  # the other direction is still tried
                    cand = evaluate({**_params(best, cfg), name: value}, cfg.n_select)
                    if cand["valid"] and cand["radius"] > best["radius"]:
                        best, improved = cand, True
                        break
            if not improved:
                break
        params = _params(best, cfg)
        if cfg.sound and best["valid"]:
            final = evaluate(
                params, n, stage=3
            )  # fresh draws: an honest bound for the chosen noise
            final["final"] = True
        else:
            final = best
        prediction = reference_class if final["valid"] else ABSTAIN
        radius = final["radius"] if final["valid"] else 0.0
        return IOPTResult(params, prediction, final["p_a"], radius, history)
    finally:
        smoothed.noise = base_noise


def _params(entry: dict, cfg: IOPTConfig) -> dict:
    return {k: entry[k] for k in cfg.steps}
