"""One table for every noise x norm x d: curve time, look-up time, memory, pso against the
exact engine, and certification throughput with its forward share, all measured in one run.

    python benchmarks/all.py --quick      # d = 784: about 12 minutes on 2 shared cores
    python benchmarks/all.py              # d = 784, 3072, 150528: 2-2.5 hours on 2 cores
    python benchmarks/all.py --only laplace uniform   # some families (tables concatenate)

Per noise and d, a fresh process (so that its peak memory is its own) builds the cold-cache
200-point p_A -> R curve for norms 1, 2, inf together (what `certify.py curve` does), times
10,000 look-ups on it per norm, and computes the radius at p_A = 0.9 with the exact engine and
with the paper's swarm (`method="pso"`, seed 0). Certification (`benchmarks/certify.py`,
smoothing only: draws, forward passes, counts, Clopper-Pearson) runs a LeNet at d = 784 and,
in the full mode, a ResNet-20 at d = 3072; d = 150528 (ResNet-50) is a GPU job:
`benchmarks/certify_device.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from unicr_pl.radius.checks import norm_label

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from curves import NOISES  # noqa: E402

from certify import measure  # noqa: E402

_CHILD = """
import json, resource, sys, time
import numpy as np
from unicr_pl.noises import create_noise
from unicr_pl.radius import PSOConfig, certified_radii
from unicr_pl.radius.curve import RadiusCurve, default_p_grid
name, params, dim, points, cache, pso = json.loads(sys.argv[1])
noise = create_noise(name, **params)
norms = [1.0, 2.0, float("inf")]
start = time.perf_counter()
curve = RadiusCurve(noise, dim, ["1", "2", "inf"], default_p_grid(points), cache_dir=cache)
curve_s = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, curve's peak
p_a = np.random.default_rng(0).uniform(0.5, 1.0, 10_000)
rows = {}
for p in norms:
    curve.radius(p_a[:10], norm=p)
    start = time.perf_counter()
    curve.radius(p_a, norm=p)
    rows[p] = {"lookup_us": (time.perf_counter() - start) / len(p_a) * 1e6}
for r in certified_radii(noise, 0.9, norms=norms, dim=dim):
    rows[r.norm].update(exact=r.radius_family, proven=r.radius, exact_s=r.seconds)
if pso is not None:  # {} is the full swarm: PSOConfig's defaults
    cfg = PSOConfig(**pso)
    for r in certified_radii(noise, 0.9, norms=norms, dim=dim, method="pso", pso=cfg, seed=0):
        rows[r.norm].update(pso=r.radius_family, pso_s=r.seconds)
out = {"noise": noise.describe(), "curve_s": curve_s, "peak_gib": peak}
print(json.dumps({**out, "norms": {str(p): v for p, v in rows.items()}}))
"""


def noise_params(params: dict) -> dict:
    """sigma = 1 unless the family needs a scale (infinite RMS: alpha = 1)."""
    return params if "alpha" in params else {"sigma": 1.0, **params}


def pso_settings(dim: int, quick: bool) -> dict | None:
    """The swarm run beside the engine (benchmarks/radius.py's settings in the full mode)."""
    if quick:
        return {"n": 1000, "particles": 4, "iterations": 2}
    return {"n": 1000, "particles": 2, "iterations": 1} if dim > 100_000 else {}


def radius_rows(dims, quick: bool, points: int, timeout: float, only) -> dict:
    """{(noise index, d): the child's JSON, or None when it ran out of time}."""
    out = {}
    for i, (name, params) in enumerate(NOISES):
        for dim in dims if not only or name in only else ():
            with tempfile.TemporaryDirectory() as cache:  # cold: a fresh, empty cache
                spec = [name, noise_params(params), dim, points, cache, pso_settings(dim, quick)]
                try:
                    done = subprocess.run(
                        [sys.executable, "-c", _CHILD, json.dumps(spec)],
                        capture_output=True, text=True, timeout=timeout, check=True,
                    )  # fmt: skip
                    out[i, dim] = json.loads(done.stdout.splitlines()[-1])
                except subprocess.TimeoutExpired:
                    out[i, dim] = None
            print(f"  {name} {params} d={dim} done", file=sys.stderr, flush=True)
    return out


def certification_rows(quick: bool, only) -> dict:
    """{(noise index, d): benchmarks/certify.measure's dict} (smoothing only, 32-true)."""
    from unicr_pl.noises import create_noise

    cases = [("lenet", 784, 1000 if quick else 2000, 2 if quick else 4)]
    if not quick:
        cases.append(("resnet20", 3072, 1000, 2))
    out = {}
    for i, (name, params) in enumerate(NOISES):
        for backbone, dim, n, images in cases if not only or name in only else ():
            noise = create_noise(name, **noise_params(params))
            out[i, dim] = measure(backbone, noise, torch.device("cpu"), images, n=n, full=False)
    return out


HEADER = (
    "| noise | d | norm | curve s | peak GiB | look-up us | exact R | pso R | pso vs exact "
    "| proven R | certify images/s | forward share (CPU) | forward share (wall) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table(radii: dict, certs: dict, dims) -> list[str]:
    """Markdown rows: per noise x d x norm; the curve, its memory and the certification are
    per noise x d (the curve holds the three norms), so they fill the l1 row only."""
    lines = [HEADER]
    for i, (name, params) in enumerate(NOISES):
        for dim in (d for d in dims if (i, d) in radii):
            got, cert = radii.get((i, dim)), certs.get((i, dim))
            label = name if "beta" not in params else f"{name}({params['beta']:g})"
            if got is None:
                lines.append(f"| {label} | {dim} | | > timeout | | | | | | | | | |")
                continue
            for k, (norm, r) in enumerate(got["norms"].items()):
                shared = f"{got['curve_s']:.1f} | {got['peak_gib']:.2f}" if k == 0 else " | "
                pso = r.get("pso")
                vs = f"{pso / r['exact'] - 1:+.1%}" if pso and r["exact"] > 0 else "-"
                pso_s = f"{pso:.4g}" if pso is not None else "-"
                c = "| | "
                if cert and k == 0:
                    c = f"{cert['images_per_s']:.2f} | {cert['share_cpu']:.1%} | "
                    c += f"{cert['share_wall']:.1%}"
                lines.append(
                    f"| {label} | {dim} | {norm_label(float(norm))} | {shared} | "
                    f"{r['lookup_us']:.2f} | {r['exact']:.4g} | {pso_s} | {vs} | "
                    f"{r['proven']:.4g} | {c} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 784 only, a lighter swarm")
    parser.add_argument("--points", type=int, default=200, help="curve grid points")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per noise and d")
    parser.add_argument("--only", nargs="+", help="family names to run (default: all)")
    args = parser.parse_args()
    dims = (784,) if args.quick else (784, 3072, 150528)
    load = os.getloadavg()[0]
    radii = radius_rows(dims, args.quick, args.points, args.timeout, args.only)
    certs = certification_rows(args.quick, args.only)
    print(
        f"torch threads {torch.get_num_threads()}, load average {load:.2f} -> "
        f"{os.getloadavg()[0]:.2f}; radii at p_A = 0.9 (binary), sigma = 1 (alpha = 1 for "
        "cauchy, pareto); pso: " + json.dumps({d: pso_settings(d, args.quick) for d in dims})
    )
    print("\n".join(table(radii, certs, dims)))


if __name__ == "__main__":
    main()
