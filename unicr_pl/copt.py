"""C-OPT without a W&B server: run a W&B grid-sweep file locally, then tabulate Eq. (5).

    python -m unicr_pl.copt configs/sweeps/copt_mnist.yaml [--out outputs/copt] [--parallel N]

Every grid point of the file (the same points, with the same `--key=value` arguments, that
`wandb agent` would pass to its `program`) runs as one `train.py` process, one after another or
`--parallel N` at a time (one per GPU where there are GPUs). A point whose run finished is
skipped. Each run's last CertificationCallback radii are then grouped by every parameter but
sigma: for each group and norm, the robustness score integrates over the radius the best
certified accuracy across the sigma set (Table 2). Written as CSV, printed, and plotted.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from unicr_pl.metrics import robustness_score
from unicr_pl.processes import die_with_parent
from unicr_pl.results import FileLock, read_callback_radii

REPO = Path(__file__).resolve().parents[1]


def load_sweep(path: str | Path) -> dict:
    """Reads a W&B sweep file and checks it is a grid this runner can enumerate."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read sweep file {path}: {err}") from None
    if not isinstance(cfg, dict) or cfg.get("method") != "grid" or "parameters" not in cfg:
        raise ValueError(f"{path}: need a W&B sweep with method: grid and parameters")
    for name, spec in cfg["parameters"].items():
        if not isinstance(spec, dict) or not ({"value", "values"} & set(spec)):
            raise ValueError(f"{path}: parameter {name!r} needs 'value' or 'values' for a grid")
    return cfg


def grid_points(cfg: dict) -> list[dict]:
    """All grid points as {parameter: value}, in the order W&B's grid search suggests them: the
    cartesian product over parameters sorted by name, a repeated combination once (W&B compares
    values by a YAML hash in which 3.0 equals 3)."""
    names = sorted(cfg["parameters"])
    choices = [
        cfg["parameters"][n]["values"]
        if "values" in cfg["parameters"][n]
        else [cfg["parameters"][n]["value"]]
        for n in names
    ]
    points, seen = [], set()
    for combo in itertools.product(*choices):
        key = tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in combo)
        if repr(key) not in seen:
            seen.add(repr(key))
            points.append(dict(zip(names, combo, strict=True)))
    return points


def agent_args(point: dict) -> list[str]:
    """The arguments `wandb agent` passes for a point: --key=value, values as Python reprs."""
    return [f"--{k}={v if isinstance(v, str) else repr(v)}" for k, v in point.items()]


def point_name(point: dict, cfg: dict) -> str:
    varying = [n for n, spec in cfg["parameters"].items() if "values" in spec]
    return "_".join(f"{n}={point[n]}" for n in varying) or "single"


def run_points(cfg: dict, out: Path, parallel: int, extra: list[str]) -> list[tuple[dict, Path]]:
    """Runs every unfinished point; returns (point, run directory) for all points.

    Each point's run folder is locked (`<folder>.lock`) for as long as its process runs, and
    the process inherits the lock: a rerun refuses to start beside a live run or orphan, naming
    its pid. Children die with the runner (PR_SET_PDEATHSIG on Linux; killed on any exit)."""
    points = [(p, out / point_name(p, cfg)) for p in grid_points(cfg)]
    todo = [(p, d) for p, d in points if not (d / "DONE").exists()]
    print(f"{len(points)} grid points, {len(points) - len(todo)} already finished", flush=True)
    program = REPO / cfg.get("program", "train.py")
    gpus = _gpu_count()
    running: list[tuple[subprocess.Popen, Path, object, FileLock]] = []
    try:
        for i, (point, run_dir) in enumerate(todo):
            while len(running) >= max(1, parallel):
                _reap(running)
            running.append(_start(i, len(todo), point, run_dir, program, gpus, extra))
        while running:
            _reap(running)
    finally:  # an error or Ctrl-C here must not leave runs going on without us
        for proc, _, log, lock in running:
            proc.kill()
            proc.wait()
            log.close()
            lock.release()
    return points


def _start(i, total, point, run_dir: Path, program: Path, gpus: int, extra: list[str]):
    """Locks the run folder, then starts its process (which holds the lock with us)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir).acquire()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        args = [sys.executable, str(program), *agent_args(point)]
        # --run_dir: train.py writes into exactly this folder (not a new one below it)
        args += [f"--trainer.default_root_dir={run_dir}", f"--run_dir={run_dir}", *extra]
        log = open(run_dir / "train.log", "w")  # noqa: SIM115 (closed when the run ends)
        print(f"[{i + 1}/{total}] {' '.join(args[2:])}", flush=True)
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(lock.fileno(),),  # the child keeps the folder locked while it lives
            preexec_fn=die_with_parent,  # noqa: PLW1509 (one prctl call, no locks)
        )
    except BaseException:
        lock.release()
        raise
    lock.note(f"{os.getpid()} (runner), {proc.pid} (run)")
    return proc, run_dir, log, lock


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _reap(running: list) -> None:
    proc, run_dir, log, lock = running[0]
    code = proc.wait()
    log.close()
    running.pop(0)
    if code == 0:
        (run_dir / "DONE").write_text("")
    else:
        print(f"  run failed (exit {code}); see {run_dir / 'train.log'}", flush=True)
    lock.release()


def read_run(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per-norm (radius, correct) of a run's last certification (all ranks), or None. train.py
    writes into a run folder of its own under the point's folder: the newest one is read."""
    folders = sorted((d for d in run_dir.glob("*/") if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for folder in [*reversed(folders), run_dir]:
        radii = read_callback_radii(folder)
        if radii is not None:
            return radii
    return None


def table(cfg: dict, points: list[tuple[dict, Path]]) -> tuple[list[str], list[list]]:
    """Rows: one per setting of the non-sigma parameters; columns: R_score per norm."""
    keys = [n for n, s in cfg["parameters"].items() if "values" in s and n != "sigma"]
    groups: dict[tuple, list[dict]] = {}
    for point, run_dir in points:
        result = read_run(run_dir)
        if result is not None:
            groups.setdefault(tuple(point[k] for k in keys), []).append(result)
    # Proven scores first (the certificate), then the family ones (comparable to the paper).
    found = {n for runs in groups.values() for r in runs for n in r}
    norms = sorted(found, key=lambda n: (n.startswith("family"), n))
    rows = []
    for key, runs in groups.items():
        scores = [robustness_score([r[n] for r in runs if n in r]) for n in norms]
        rows.append([*key, len(runs), *scores])
    return [*keys, "runs", *[f"R_score_{n}" for n in norms]], rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unicr_pl.copt", description=__doc__)
    parser.add_argument("sweep", help="W&B sweep file (method: grid)")
    parser.add_argument("--out", default="outputs/copt", help="one run directory per point")
    parser.add_argument("--parallel", type=int, default=1, help="processes at a time")
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    args, extra = parser.parse_known_args(argv)
    try:
        cfg = load_sweep(args.sweep)
        out = Path(args.out)
        if args.dry_run:
            for point in grid_points(cfg):
                print(" ".join(agent_args(point)))
            return 0
        points = run_points(cfg, out, args.parallel, extra)
    except ValueError as err:
        print(f"copt: error: {err}", file=sys.stderr)
        return 2
    header, rows = table(cfg, points)
    with open(out / "copt_table.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    print("  ".join(f"{h:>14s}" for h in header))
    for row in rows:
        print("  ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v!s:>14s}" for v in row))
    _plot(header, rows, out / "copt_table.png")
    print(f"wrote {out / 'copt_table.csv'} and {out / 'copt_table.png'}")
    return 0


def _plot(header: list[str], rows: list[list], path: Path) -> None:
    if not rows or header[0] == "runs":
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = header.index("runs") + 1
    fig, axes = plt.subplots(
        1, len(header) - first, figsize=(4 * (len(header) - first), 3.2), squeeze=False
    )
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
    for ax, j in zip(axes[0], range(first, len(header)), strict=True):
        ax.plot([rows[i][0] for i in order], [rows[i][j] for i in order], "o-")
        ax.set(xlabel=header[0], ylabel=header[j])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
