"""certify.py attack (UniCR Table 6) and the pieces written here: l1-ball projection, rescale."""

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from unicr_pl.attacks import lp_norm, project_l1_ball, rescale
from unicr_pl.commands.certify_cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def sh(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


def brute_l1_projection(v: np.ndarray, eps: float) -> np.ndarray:
    """argmin ||w - v||_2 s.t. ||w||_1 <= eps, by SLSQP on w = a - b (a, b >= 0)."""
    d = len(v)
    res = minimize(
        lambda z: np.sum((z[:d] - z[d:] - v) ** 2),
        np.zeros(2 * d),
        bounds=[(0, None)] * (2 * d),
        constraints=[{"type": "ineq", "fun": lambda z: eps - z.sum()}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return res.x[:d] - res.x[d:]


@pytest.mark.parametrize("seed,eps", list(itertools.product(range(4), [0.1, 0.7, 3.0])))
def test_l1_projection_matches_brute_force(seed, eps):
    v = np.random.default_rng(seed).normal(size=(1, 6))
    w = project_l1_ball(torch.tensor(v), eps).numpy()[0]
    expected = v[0] if np.abs(v).sum() <= eps else brute_l1_projection(v[0], eps)
    np.testing.assert_allclose(w, expected, atol=1e-5)
    assert np.abs(w).sum() <= eps + 1e-9


def test_l1_projection_rows_are_independent():
    v = torch.randn(5, 3, 4, dtype=torch.float64)
    batch = project_l1_ball(v, 1.0)
    for i in range(5):
        torch.testing.assert_close(batch[i], project_l1_ball(v[i : i + 1], 1.0)[0])


@pytest.mark.parametrize("p", [1.0, 2.0, float("inf")])
def test_rescale_gives_exact_norm(p):
    delta = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    delta[1] = 0  # a zero direction still moves by the requested norm
    radius = torch.tensor([0.3, 1.7, 4.0], dtype=torch.float64)
    torch.testing.assert_close(lp_norm(rescale(delta, p, radius), p), radius, rtol=1e-12, atol=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits model, 12 certified test images, and its results TSV."""
    root = tmp_path_factory.mktemp("attack")
    out = sh(
        str(ROOT / "train.py"), "--epochs", "5", "--sigma", "0.25", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(root), "--certification.max_samples", "5",
        "--certification.n", "100", cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = str(next(root.rglob("*.ckpt")))
    tsv = root / "r.tsv"
    out = sh(
        "certify.py", "certify", "--ckpt", ckpt, "--n0", "50", "--n", "1000", "--alpha0", "0.001",
        "--max", "12", "--norms", "2", "inf", "--out", str(tsv),
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return ckpt, tsv, root


@pytest.mark.slow  # about a minute on two CPU cores
def test_no_flip_at_the_radius_flips_beyond(run):
    ckpt, tsv, root = run
    out_dir = root / "att"
    out = sh(
        "certify.py", "attack", "--ckpt", ckpt, "--results", str(tsv), "--out", str(out_dir),
        "--norm", "2", "inf", "--scale", "1", "8", "--attack", "pgd", "--m", "8", "--steps", "5",
        "--max", "6",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    with open(out_dir / "attack.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and {r["norm"] for r in rows} == {"l2", "linf"}
    for r in rows:  # the perturbation has exactly the requested norm (relative 1e-4: float32)
        want = float(r["scale"]) * float(r["radius"])
        assert abs(float(r["delta_norm"]) - want) <= 1e-4 * want
    at_radius = [r for r in rows if float(r["scale"]) == 1]
    beyond = [r for r in rows if float(r["scale"]) == 8]
    # alpha0 = 0.001 per certificate: 12 attacks make a false flip at scale 1 improbable.
    assert not any(r["significant"] == "1" for r in at_radius)
    assert sum(r["flipped"] == "1" for r in at_radius) == 0
    assert sum(r["flipped"] == "1" for r in beyond) >= 1, "the attack never succeeds"
    assert "POSSIBLE SOUNDNESS FAILURE" not in out.stderr
    assert (out_dir / "table.md").is_file() and "scale 8" in (out_dir / "table.csv").read_text()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--scale", "0"], "--scale must be > 0"),
        (["--attack", "fgsm"], "unknown attack 'fgsm'; valid: pgd (l1, l2, linf)"),
        (["--norm", "1"], "l_1 was not certified"),
        (["--m", "0"], "--m must be >= 1"),
    ],
)
def test_bad_input_is_one_line_before_any_attack(run, extra, message, capsys):
    ckpt, tsv, root = run
    out_dir = root / "bad"
    # In this process (no interpreter start-up per case); the next test runs the real entry point.
    code = main(["attack", "--ckpt", ckpt, "--results", str(tsv), "--out", str(out_dir),
                 "--norm", "2", *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and not out_dir.exists()


def test_results_of_another_checkpoint_are_refused(run, tmp_path):
    ckpt, tsv, _ = run
    other = tmp_path / "other.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["epoch"] = -1  # same settings, other file contents
    torch.save(state, other)
    out = sh("certify.py", "attack", "--ckpt", str(other), "--results", str(tsv), "--out",
             str(tmp_path / "o"))  # fmt: skip
    assert out.returncode == 2 and "certified with another checkpoint" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
