"""certify.py certify on a train.py checkpoint: radii, resume, refusal, DDP, bad input."""

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from unicr_pl.commands.certify_cli import main
from unicr_pl.results import read_results
from unicr_pl.smoothing import clopper_pearson_lower

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def sh(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    out = sh(
        str(ROOT / "train.py"),
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--sigma",
        "0.5",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--certification.max_samples",
        "10",
        "--certification.n",
        "100",
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return str(next(root.rglob("*.ckpt")))


def certify_args(ckpt, out, *extra) -> list[str]:
    return [
        "certify",
        "--ckpt",
        ckpt,
        "--n0",
        "20",
        "--n",
        "500",
        "--alpha0",
        "0.01",
        "--out",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def certify(ckpt, out, *extra):
    """Through the real entry point, in a new process (DDP; the entry point itself)."""
    return sh("certify.py", *certify_args(ckpt, out, *extra))


def certify_here(capsys, ckpt, out, *extra):
    """`main` in this process: no interpreter start-up, and mutation testing (which traces
    in-process calls only) sees the command's code."""
    capsys.readouterr()
    code = main(certify_args(ckpt, out, *extra))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def test_gaussian_radii_and_clopper_pearson(ckpt, tmp_path, capsys):
    out = certify_here(capsys, ckpt, tmp_path / "r.tsv", "--max", "20", "--norms", "1", "2", "inf")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "20 samples | certified accuracy" in out.stdout
    rows = read_results(tmp_path / "r.tsv")
    assert [int(r["idx"]) for r in rows] == list(range(20))
    for r in rows:
        p_a = float(r["p_a"])
        if int(r["predict"]) < 0:
            assert float(r["radius_l2"]) == 0
            continue
        # p_A is the Clopper-Pearson bound of some count n_A out of n = 500.
        counts = np.arange(501)
        assert np.min(np.abs(clopper_pearson_lower(counts, 500, 0.01) - p_a)) < 1e-9
        assert math.isclose(float(r["radius_l2"]), 0.5 * norm.ppf(p_a), rel_tol=1e-6)
        assert math.isclose(float(r["radius_linf"]), 0.5 * norm.ppf(p_a) / 8, rel_tol=1e-6)
        assert r["radius"] == r["radius_l1"]


def test_resume_and_refuse_other_settings(ckpt, tmp_path, capsys):
    path = tmp_path / "r.tsv"
    assert certify_here(capsys, ckpt, path, "--max", "5").returncode == 0
    first = path.read_text().splitlines()
    again = certify_here(capsys, ckpt, path, "--max", "8")
    assert again.returncode == 0 and "certifying 3 of 8 samples (5 done)" in again.stdout
    lines = path.read_text().splitlines()
    assert lines[:6] == first and len(lines) == 9
    refused = main(["certify", "--ckpt", ckpt, "--n", "700", "--out", str(path)])
    assert refused == 2 and "other settings (alpha0, n, n0)" in capsys.readouterr().err


def test_other_family_keeps_the_training_rms(ckpt, tmp_path, capsys):
    out = certify_here(capsys, ckpt, tmp_path / "lap2.tsv", "--max", "1", "--noise", "laplace")
    assert out.returncode == 0, out.stderr[-2000:]
    # Laplace at RMS 0.5 (the training sigma) has alpha = 0.5 / sqrt(2) = 0.353553.
    assert "laplace(alpha=0.353553)" in out.stdout


def test_other_noise_is_allowed_and_said(ckpt, tmp_path, capsys):
    out = certify_here(
        capsys, ckpt, tmp_path / "lap.tsv", "--max", "3", "--noise", "laplace", "--sigma", "0.5"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "certifying under laplace" in out.stdout and "trained under gaussian" in out.stdout


def test_two_processes_give_one_ordered_file(ckpt, tmp_path):
    out = certify(
        ckpt,
        tmp_path / "d.tsv",
        "--max",
        "12",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp_spawn",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_results(tmp_path / "d.tsv")
    assert [int(r["idx"]) for r in rows] == list(range(12))
    assert not list(tmp_path.glob("d.tsv.part*"))


def test_bad_input_fails_before_work(ckpt, tmp_path, capsys):
    garbage = tmp_path / "bad.ckpt"
    garbage.write_text("not a checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["--ckpt", str(tmp_path / "none.ckpt")], "checkpoint not found"),
        (["--ckpt", str(garbage)], "cannot read checkpoint"),
        (["--ckpt", ckpt, "--n0", "0"], "n0 must be an integer >= 1"),
        (["--ckpt", ckpt, "--alpha0", "1.5"], "alpha0 must be in (0, 1)"),
        (["--ckpt", ckpt, "--alpha", "0.001"], "--alpha is now --alpha0"),
        (["--ckpt", ckpt, "--out", str(blocker / "x.tsv")], "cannot write results"),
    ]
    for args, message in cases:  # in this process: no interpreter start-up per case
        code = main(["certify", *args])
        errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
        assert code == 2 and len(errors) == 1 and message in errors[0], (args, errors)
    # The same through the real entry point: one error line, exit code 2, no traceback.
    out = sh("certify.py", "certify", "--ckpt", str(garbage))
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert out.returncode == 2 and len(errors) == 1 and "cannot read checkpoint" in errors[0]
    assert "Traceback" not in out.stderr


def test_iopt_writes_the_chosen_noise(ckpt, tmp_path, capsys):
    out = certify_here(
        capsys,
        ckpt,
        tmp_path / "io.tsv",
        "--max",
        "2",
        "--norms",
        "2",
        "--iopt",
        "true",
        "--iopt_select",
        "200",
        "--iopt_rounds",
        "2",
        # Each new beta costs a curve (sigma steps share one: R scales with alpha), so the beta
        # steps are refused at these bounds; the climb itself is tested in tests/test_iopt.py.
        "--iopt_beta_bounds",
        "1.9",
        "2.1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = read_results(tmp_path / "io.tsv")
    assert len(rows) == 2 and {"iopt_sigma", "iopt_beta"} <= set(rows[0])
    for r in rows:
        assert float(r["iopt_sigma"]) > 0 and float(r["iopt_beta"]) > 0


@pytest.mark.slow
def test_standard_classifier_through_iopt(tmp_path):
    """Table 8: a model trained without noise (sigma = 0), certified through I-OPT."""
    root = tmp_path / "train0"
    root.mkdir()
    out = sh(
        str(ROOT / "train.py"),
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--sigma",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(root),
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    plain = str(next(root.rglob("*.ckpt")))
    refused = sh("certify.py", "certify", "--ckpt", plain, "--out", str(tmp_path / "x.tsv"))
    assert refused.returncode == 2 and "trained without noise" in refused.stderr
    out = certify(
        plain,
        tmp_path / "t8.tsv",
        "--max",
        "2",
        "--norms",
        "2",
        "--iopt",
        "true",
        "--noise",
        "gennormal",
        "--sigma",
        "0.25",
        "--iopt_select",
        "200",
        "--iopt_rounds",
        "1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(read_results(tmp_path / "t8.tsv")) == 2


def test_resume_certifies_exactly_the_missing_indices(ckpt, tmp_path, capsys):
    path = tmp_path / "gaps.tsv"
    assert certify_here(capsys, ckpt, path, "--max", "6").returncode == 0
    header, *rows = path.read_text().splitlines()
    kept = [r for r in rows if r.split("\t")[0] not in ("2", "4")]  # finished: 0, 1, 3, 5
    path.write_text("\n".join([header, *kept]) + "\n")
    again = certify_here(capsys, ckpt, path, "--max", "8")
    assert again.returncode == 0 and "certifying 4 of 8 samples (4 done)" in again.stdout
    assert sorted(int(r["idx"]) for r in read_results(path)) == list(range(8))
    assert set(kept) <= set(path.read_text().splitlines())  # finished rows are kept as they were
