"""`certify.py radius`: certified radius for given p_A (and p_B), one line per p_A."""

from __future__ import annotations

import argparse
import json

from unicr_pl.commands.noise_args import add_noise_arguments, noise_from_args
from unicr_pl.radius import METHODS, certified_radii


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("radius", help="certified radius for given p_A (and p_B)")
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


def run(args: argparse.Namespace) -> None:
    noise = noise_from_args(args)
    pbs = args.pb or [None]
    if len(pbs) not in (1, len(args.pa)):
        raise ValueError(f"--pb takes one value or one per --pa ({len(args.pa)}), got {len(pbs)}")
    pbs = pbs * len(args.pa) if len(pbs) == 1 else pbs
    for p_a, p_b in zip(args.pa, pbs, strict=True):
        results = certified_radii(
            noise,
            p_a,
            p_b,
            norms=args.norm,
            dim=args.dim,
            method=args.method,
            samples=args.samples,
            seed=args.seed,
            device=args.device,
            refine=args.refine,
        )
        for r in results:
            if args.json:
                print(json.dumps({**r.to_json(), "noise": repr(noise)}), flush=True)
            else:
                norm = "inf" if r.norm == float("inf") else f"{r.norm:g}"
                print(f"p_a={r.p_a:.6g} p_b={r.p_b:.6g} l{norm} radius={r.radius:.6f}", flush=True)
