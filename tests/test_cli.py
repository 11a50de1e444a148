"""certify.py radius / curve, as a user runs them."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy.stats import norm

from unicr_pl.commands.certify_cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_process(*args):
    """certify.py in its own process, as a user runs it (one test each: the entry point)."""
    return subprocess.run(
        [sys.executable, "certify.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def run(capsys):
    """certify.py's main in this process (no interpreter start-up per call): an object with
    returncode, stdout and stderr, like subprocess.run's."""

    def call(*args, check=True):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
        out = capsys.readouterr()
        if check:
            assert code == 0, out.err
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call


def test_radius_json_lines():
    out = run_process(
        "radius",
        "--noise",
        "gaussian",
        "--sigma",
        "0.5",
        "--norm",
        "2",
        "inf",
        "--dim",
        "3072",
        "--pa",
        "0.6",
        "0.9",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert {"noise", "p_a", "p_b", "norm", "dim", "radius", "method", "seconds"} <= set(row)
    l2 = [r for r in rows if r["norm"] == 2.0]
    for r in l2:
        assert math.isclose(r["radius"], 0.5 * norm.ppf(r["p_a"]), rel_tol=1e-3)
    assert {r["norm"] for r in rows} == {2.0, "inf"}


def test_radius_plain_and_multiclass(run):
    out = run(
        "radius",
        "--noise",
        "gennormal",
        "--beta",
        "1.5",
        "--sigma",
        "1",
        "--norm",
        "1",
        "--dim",
        "784",
        "--pa",
        "0.8",
        "--pb",
        "0.1",
    )
    assert "p_a=0.8 p_b=0.1 l1 radius=" in out.stdout


def test_radius_refine_reports_the_swarm_gain(run):
    args = ["radius", "--noise", "laplace", "--norm", "2", "--dim", "16", "--pa", "0.9"]
    exact = json.loads(run(*args, "--json").stdout)
    refined = json.loads(run(*args, "--json", "--refine", "--samples", "500").stdout)
    gain = refined["details"]["pso_gain"]
    assert 0 < gain <= 1
    assert math.isclose(refined["radius"], exact["radius"] * gain, rel_tol=1e-9)
    out = run(*args, "--method", "pso", "--refine", check=False)
    assert out.returncode == 2 and "refine applies to method 'exact'" in out.stderr


def test_bad_input_is_one_clear_line(run):
    cases = [
        (["--noise", "nope"], "unknown noise 'nope'; valid names"),
        (["--noise", "gennormal", "--beta", "-1"], "beta must be in (0, inf)"),
        (["--pa", "1.5"], "p_a must be in [0, 1]"),
        (["--norm", "0"], "norm p must be in (0, inf]"),
        (["--noise", "cauchy"], "cauchy has infinite RMS"),
    ]
    for extra, message in cases:
        args = ["radius", "--dim", "10", "--pa", "0.9", *extra]
        out = run(*args, check=False)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    # The same through the real entry point: one line on stderr, exit code 2, no traceback.
    out = run_process("radius", "--dim", "10", "--pa", "0.9", "--noise", "nope")
    assert out.returncode == 2 and "unknown noise 'nope'" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_curve_writes_csv_and_png(run, tmp_path):
    out = run(
        "curve",
        "--noise",
        "laplace",
        "--norm",
        "1",
        "2",
        "--dim",
        "16",
        "--points",
        "20",
        "--out",
        str(tmp_path),
        "--p",
        "1",
        "2",
        "inf",
        "--no-cache",
    )
    assert "wrote" in out.stdout
    csv = (tmp_path / "laplace_d16_curve.csv").read_text().splitlines()
    assert csv[0] == "p_a,R_l1,R_l2,R_family_l1,R_family_l2,teng_l1" and len(csv) == 21
    assert (tmp_path / "laplace_d16_curve.png").stat().st_size > 1000
    assert (tmp_path / "laplace_d16_radius_vs_p.csv").is_file()


def test_curve_unwritable_output_fails_before_work(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run("curve", "--dim", "8", "--out", str(blocker / "sub"), check=False)
    assert out.returncode == 2 and "not a writable directory" in out.stderr


def test_analyze_prints_table_and_score(run, tmp_path):
    for name, radii in (("sigma_0.25", [0.1, 0.3, 0.0]), ("sigma_0.50", [0.6, 0.0, 0.2])):
        lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
        lines += [f"{i}\t1\t1\t{r}\t{int(r > 0)}\t0" for i, r in enumerate(radii)]
        (tmp_path / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    out = run(
        "analyze",
        str(tmp_path / "sigma_0.25.tsv"),
        str(tmp_path / "sigma_0.50.tsv"),
        "--radii",
        "0",
        "0.25",
        "0.5",
        "--out",
        str(tmp_path / "an"),
    )
    lines = out.stdout.splitlines()
    assert lines[0].split()[-1] == "R_score"
    last = next(line for line in lines if line.startswith("max over files")).split()
    # max curve: acc(r) = 2/3 up to 0.2, 1/3 up to 0.6 -> R_score = 0.2 * 2/3 + 0.4 / 3
    assert abs(float(last[-1]) - (0.2 * 2 / 3 + 0.4 / 3)) < 1e-4
    assert (tmp_path / "an" / "certified_accuracy_l2.csv").is_file()
    # Table 3 view: top 20% of three samples is the single largest radius, 100% the ACR.
    top = [ln for ln in lines if ln.startswith("sigma_0.25 ")][-1].split()[1:]
    assert float(top[0]) == 0.3 and abs(float(top[-1]) - 0.4 / 3) < 1e-3
    assert (tmp_path / "an" / "top_radius_means_l2.csv").is_file()
