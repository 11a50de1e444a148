"""Curve benchmark: a cold-cache 200-point p_A -> R curve, norms 1 2 inf together, for every
built-in noise at d = 150528, through the code `certify.py curve` uses (`RadiusCurve` with the
default grid), each in a fresh process so that peak memory is its own.

    python benchmarks/curves.py [--dim 150528] [--points 200] [--only gaussian laplace ...]

Prints wall-clock seconds (interpreter and import start-up excluded), of which the family
curve (the rest is the proven bounds), peak resident memory (resource.getrusage) and the load
average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

NOISES = [
    ("gaussian", {}),
    ("laplace", {}),
    ("hypsecant", {}),
    ("gennormal", {"beta": 0.5}),
    ("gennormal", {"beta": 0.75}),
    ("gennormal", {"beta": 1.5}),
    ("gennormal", {"beta": 3.0}),
    ("cauchy", {"alpha": 1.0}),
    ("pareto", {"alpha": 1.0, "beta": 3.0}),
    ("lapgauss", {"beta": 0.5}),
    ("expmix", {"beta": 0.5}),
    ("uniform", {}),
]

_CHILD = """
import json, resource, sys, time
from unicr_pl.noises import create_noise
from unicr_pl.radius import curve
name, params, dim, points, cache = json.loads(sys.argv[1])
params = params if "alpha" in params else {"sigma": 1.0, **params}
noise = create_noise(name, **params)
family = curve.compute_curve
spent = []
def timed(*args):
    start = time.perf_counter()
    out = family(*args)
    spent.append(time.perf_counter() - start)
    return out
curve.compute_curve = timed
start = time.perf_counter()
curve.RadiusCurve(noise, dim, ["1", "2", "inf"], curve.default_p_grid(points), cache_dir=cache)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"noise": noise.describe(), "seconds": seconds, "family": sum(spent),
                  "peak_gib": peak}))
"""


def _run(name: str, params: dict, args) -> dict | None:
    """One cold curve in a fresh process; None if it ran past the timeout."""
    with tempfile.TemporaryDirectory() as cache:  # cold: a fresh, empty cache
        spec = json.dumps([name, params, args.dim, args.points, cache])
        try:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, spec],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=150528)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--only", nargs="+", help="family names to run (default: all)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per noise")
    args = parser.parse_args()
    print(f"d={args.dim}  points={args.points}  norms=1 2 inf  cold cache, one process each")
    head = f"{'noise':32s} {'seconds':>9s} {'family s':>9s} {'peak GiB':>9s} {'load avg':>9s}"
    print(head)
    for name, params in NOISES:
        if args.only and name not in args.only:
            continue
        load = os.getloadavg()[0]
        row = _run(name, params, args)
        if row is None:
            print(f"{name + str(params):32s} {'> ' + str(int(args.timeout)):>9s}", flush=True)
            continue
        line = f"{row['noise']:32s} {row['seconds']:9.1f} {row['family']:9.1f}"
        line += f" {row['peak_gib']:9.2f} {load:9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
