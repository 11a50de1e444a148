"""`certify.py radius`: certified radius for given p_A (and p_B), one line per p_A."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from unicr_pl.commands.noise_args import add_noise_arguments, noise_from_args
from unicr_pl.noises import Noise
from unicr_pl.radius import METHODS, RadiusCurve, RadiusResult, certified_radii
from unicr_pl.radius.bounds import EXACT_BOUNDS, TIGHT_RTOL
from unicr_pl.radius.checks import check_dim, check_norm, check_probabilities, norm_label


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "radius",
        help="certified radius for given p_A (and p_B)",
        description="Certified radius for given p_A (and p_B). Several p_A in the binary case "
        "(no --pb, method exact, no --refine) are read from ONE p_A -> R curve (RadiusCurve, "
        "cached on disk) whose grid is exactly the given p_A values, so each radius is that "
        "curve's value at its own p_A (never above the engine's); one p_A, --pb, --refine or "
        "method pso solve each p_A directly.",
    )
    add_noise_arguments(p)
    p.add_argument("--pa", type=float, nargs="+", required=True, help="lower bound(s) of p_A")
    p.add_argument(
        "--pb",
        type=float,
        nargs="+",
        help="upper bound(s) of p_B (one, or one per --pa); default: the binary case 1 - p_A",
    )
    p.add_argument("--norm", nargs="+", default=["2"], help="l_p order(s): numbers or inf")
    p.add_argument("--dim", type=int, required=True, help="input dimension d")
    p.add_argument("--method", choices=METHODS, default="exact")
    p.add_argument(
        "--refine",
        action="store_true",
        help="method exact: search further with the swarm from the worst structured direction "
        "(the radius can only go down; a Monte Carlo estimate, see the README)",
    )
    p.add_argument("--samples", type=int, help="Monte Carlo draws (method pso, --refine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (method pso, --refine)")
    p.add_argument("--device", default="cpu", help="torch device (method pso, --refine)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=run)


def check_device(device: str) -> torch.device:
    """The torch device named by `device`, or a ValueError if it is malformed or absent."""
    try:
        found = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {device!r} is not a torch device: {err}") from err
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available (torch.cuda.is_available())")
    if found.type == "cuda" and (found.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available")
    return found


def curve_radii(noise: Noise, p_as: list[float], norms, dim: int) -> list[RadiusResult]:
    """Binary-case radii of many p_A from one RadiusCurve whose grid is those p_A values.

    Each p_A is a grid point, so the look-up (the grid value at or below p_A) is the curve's
    value at p_A itself; p_A <= 1/2 gives 0 and p_A = 1 the engine's value (outside any grid).
    """
    ps = [check_norm(p) for p in norms]
    start = time.perf_counter()
    inside = sorted({p for p in p_as if 0.5 < p < 1.0})
    curve = RadiusCurve(noise, dim, [str(p) for p in ps], np.array(inside)) if inside else None
    seconds = (time.perf_counter() - start) / max(1, len(p_as) * len(ps))
    out = []
    for p_a in p_as:
        if not 0.5 < p_a < 1.0:
            out.extend(certified_radii(noise, p_a, None, norms=ps, dim=dim))
            continue
        for p in ps:
            r, fam = float(curve.radius([p_a], p)[0]), float(curve.radius_family([p_a], p)[0])
            bound = curve.bound(p)
            tight = bound.split(" ")[0] in EXACT_BOUNDS or r >= fam * (1 - TIGHT_RTOL)
            details = {"curve": curve.key()[:16], "curve_points": len(inside)}
            out.append(
                RadiusResult(
                    noise.describe(),
                    p_a,
                    1 - p_a,
                    p,
                    dim,
                    r,
                    "exact",
                    seconds,
                    details,
                    radius_family=fam,
                    bound=bound,
                    tight=bool(tight),
                )
            )
    return out


def run(args: argparse.Namespace) -> None:
    noise = noise_from_args(args)
    check_device(args.device)
    pbs = args.pb or [None]
    if len(pbs) not in (1, len(args.pa)):
        raise ValueError(f"--pb takes one value or one per --pa ({len(args.pa)}), got {len(pbs)}")
    pbs = pbs * len(args.pa) if len(pbs) == 1 else pbs
    for p_a, p_b in zip(args.pa, pbs, strict=True):  # all input checked before any work
        check_probabilities(p_a, p_b)
    norms = [check_norm(p) for p in args.norm]
    dim = check_dim(args.dim)
    one_curve = args.pb is None and args.method == "exact" and not args.refine
    if one_curve and len(args.pa) > 1:
        _print(args, noise, curve_radii(noise, args.pa, args.norm, dim))
        return
    for p_a, p_b in zip(args.pa, pbs, strict=True):
        results = certified_radii(
            noise,
            p_a,
            p_b,
            norms=norms,
            dim=dim,
            method=args.method,
            samples=args.samples,
            seed=args.seed,
            device=args.device,
            refine=args.refine,
        )
        _print(args, noise, results)


def _print(args: argparse.Namespace, noise: Noise, results: list[RadiusResult]) -> None:
    for r in results:
        if args.json:
            print(json.dumps({**r.to_json(), "noise": repr(noise)}), flush=True)
        else:
            label = norm_label(r.norm)
            print(f"p_a={r.p_a:.6g} p_b={r.p_b:.6g} {label} radius={r.radius:.6f}", flush=True)
