"""Issue 17's battery: nothing lost (kills, resume), nothing mixed (locks, shards), reproducible
to the bit (seed per sample), one error line per bad input, strict reading of results."""

import errno
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from unicr_pl.commands import certify_cli as cli
from unicr_pl.results import (
    BASE_COLUMNS,
    DESCRIPTIVE,
    FileLock,
    ResultWriter,
    read_manifest,
    read_results,
)
from unicr_pl.smoothing import SmoothedClassifier

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
N0, N, ALPHA, SIGMA = 10, 50, 0.01, 0.25


def raising_density(y):
    """A user's log-density that fails (for the error-boundary test)."""
    raise ZeroDivisionError("the user's bug")


@pytest.fixture(scope="module")
def ckpt(digits_ckpt):
    """A tiny MLP on sklearn's digits, sigma = SIGMA (tests/conftest.py)."""
    return digits_ckpt


def args(ckpt, out, *extra):
    base = ["--ckpt", ckpt, "--n0", str(N0), "--n", str(N), "--alpha0", str(ALPHA)]
    base += ["--batch", "50", "--out", str(out), "--trainer.enable_progress_bar", "false"]
    return [*base, *extra]


def certify(ckpt, out, *extra) -> int:
    """certify.py certify in this process (Lightning is imported once for all tests)."""
    return cli.main(["certify", *args(ckpt, out, *extra)])


def rows_but_time(path):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_results(path)]


def sh(*argv, env=None, **kw):
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env or ENV, capture_output=True, text=True, **kw
    )


# ----------------------------------------------------------------------------- reproducible


def test_seeded_counts_do_not_depend_on_batching():
    torch.manual_seed(0)
    net = torch.nn.Linear(16, 3)
    x = torch.randn(3, 16)
    from unicr_pl.noises import create_noise

    noise = create_noise("laplace", sigma=1.0)
    whole = SmoothedClassifier(net, noise, 3, batch_size=1000)
    small = SmoothedClassifier(net, noise, 3, batch_size=7)  # many passes, blocks split
    a = whole.certify(x, 20, 300, 0.01, seed=3, indices=[5, 9, 40])
    b = [small.certify(x[i : i + 1], 20, 300, 0.01, seed=3, indices=[k]) for i, k in
         enumerate([5, 9, 40])]  # fmt: skip
    assert np.array_equal(a.counts, np.concatenate([c.counts for c in b]))
    other = whole.certify(x, 20, 300, 0.01, seed=4, indices=[5, 9, 40])
    assert not np.array_equal(a.counts, other.counts)  # the seed matters


def test_one_go_equals_resumed_and_other_batches(ckpt, tmp_path):
    one = tmp_path / "one.tsv"
    assert certify(ckpt, one, "--max", "12", "--skip", "3") == 0
    parts = tmp_path / "parts.tsv"
    for stop in ("4", "9", "12"):  # stopped after 4 and 9 rows, resumed
        assert certify(ckpt, parts, "--max", stop, "--skip", "3") == 0
    batched = tmp_path / "batched.tsv"  # 4 inputs per predict step instead of 1
    assert certify(ckpt, batched, "--max", "12", "--skip", "3", "--batch", "200") == 0
    expected = rows_but_time(one)
    assert [int(r["idx"]) for r in expected] == list(range(0, 36, 3))
    assert rows_but_time(parts) == expected
    assert rows_but_time(batched) == expected
    manifest = read_manifest(one)
    assert manifest["indices"] == list(range(0, 36, 3)) and len(manifest["ckpt"]) == 64
    assert {"n0", "n", "alpha0", "seed", "split", "noise", "code_version"} <= set(manifest)


@pytest.mark.slow  # two spawned ranks: ~30 s on 2 cores
def test_two_ranks_give_the_same_rows(ckpt, tmp_path):
    one = tmp_path / "one.tsv"
    assert certify(ckpt, one, "--max", "10") == 0
    ddp = tmp_path / "ddp.tsv"
    out = sh(
        "certify.py", "certify", *args(ckpt, ddp, "--max", "10"), "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn", timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert rows_but_time(ddp) == rows_but_time(one)  # one row per index, bit-identical
    assert not list(tmp_path.glob("ddp.tsv.part*"))


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow  # two spawned ranks: ~30 s on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ranks_die_with_a_killed_launcher(ckpt, tmp_path):
    path = tmp_path / "d.tsv"
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    ddp += ["--trainer.strategy", "ddp"]  # rank 1 is a child of rank 0, the launcher
    argv = ["certify.py", "certify", *args(ckpt, path, "--n", "20000", *ddp)]
    launcher = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        p.read_bytes().count(b"\n") > 1 for p in tmp_path.glob("d.tsv.part[0-9]")
    ):
        time.sleep(0.1)
    ranks = _children(launcher.pid)
    assert ranks, "no rank started"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.time() + 10
    while any(_alive(r) for r in ranks) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(r) for r in ranks), "a rank went on certifying without its launcher"


# ----------------------------------------------------------------------------- nothing lost


class Killed(BaseException):
    """Stands for a SIGKILL at one chosen moment."""


def test_a_kill_while_resuming_loses_no_row(ckpt, tmp_path, monkeypatch):
    path = tmp_path / "r.tsv"
    assert certify(ckpt, path, "--max", "6") == 0
    before = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b"6\t3\t3\t0.2")  # a half-written row from a crash
    # Any rewrite of the result file while resuming is "killed" right after emptying it.
    real_open, real_write_text = open, Path.write_text

    def killed_open(file, mode="r", *a, **kw):
        if Path(file) == path and ("w" in mode or "+" in mode):
            real_open(file, "w").close()
            raise Killed
        return real_open(file, mode, *a, **kw)

    def killed_write_text(self, *a, **kw):
        return killed_open(self, "w") if self == path else real_write_text(self, *a, **kw)

    monkeypatch.setattr("builtins.open", killed_open)
    monkeypatch.setattr(Path, "write_text", killed_write_text)
    manifest = read_manifest(path)
    settings = {k: v for k, v in manifest.items() if k not in DESCRIPTIVE}
    norms = [float(p) for p in manifest["norms"]]
    extra = tuple(before.decode().split("\n")[0].split("\t")[len(BASE_COLUMNS) + len(norms) :])
    try:
        writer = ResultWriter(path, norms, settings, extra)
        writer.close()
    except Killed:
        pass
    monkeypatch.undo()
    assert path.read_bytes() == before  # the finished rows, only the half row cut off
    assert writer.done == set(range(6))


def test_sigkill_mid_run_then_rerun_gives_the_one_go_file(ckpt, tmp_path):
    one = tmp_path / "one.tsv"
    assert certify(ckpt, one, "--max", "40", "--n", "400") == 0
    path = tmp_path / "k.tsv"
    proc = subprocess.Popen(
        [sys.executable, "certify.py", "certify", *args(ckpt, path, "--max", "40", "--n", "400")],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 4:  # header + 3 rows
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = path.read_bytes().count(b"\n") - 1
    assert 3 <= kept < 40  # killed mid-run
    assert certify(ckpt, path, "--max", "40", "--n", "400") == 0
    assert rows_but_time(path) == rows_but_time(one)


def test_disk_full_mid_run_is_one_line_and_keeps_the_rows(ckpt, tmp_path, monkeypatch, capsys):
    path = tmp_path / "full.tsv"
    real_write, calls = ResultWriter.write, []

    def full_after_two(self, row):
        calls.append(row["idx"])
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        real_write(self, row)

    monkeypatch.setattr(ResultWriter, "write", full_after_two)
    assert certify(ckpt, path, "--max", "5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"certify.py certify: error: No space left on device ({path})"]
    monkeypatch.undo()
    assert len(read_results(path)) == 2  # complete rows stay, and a rerun resumes
    assert not list(tmp_path.glob("*.lock"))  # the lock went with the failure


# ----------------------------------------------------------------------------- nothing mixed


def test_a_second_writer_is_refused_with_the_holders_pid(ckpt, tmp_path, capsys):
    path = tmp_path / "r.tsv"
    with FileLock(path):  # another writer holds the output (flock: also within a process)
        assert certify(ckpt, path, "--max", "3") == 2
    err = capsys.readouterr().err
    assert f"{path} is being written by another process (pid {os.getpid()})" in err
    assert not path.exists()
    writer = ResultWriter(tmp_path / "w.tsv", [2.0], {"n": 1})
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        ResultWriter(tmp_path / "w.tsv", [2.0], {"n": 1})
    writer.close()
    ResultWriter(tmp_path / "w.tsv", [2.0], {"n": 1}).close()  # released: a rerun may write


ORPHAN_PROGRAM = """
import os, sys, time
root = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--trainer.default_root_dir=")][0]
open(os.path.join(root, "pid"), "w").write(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_TRAIN_SECONDS", "60")))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_copt_children_die_with_the_runner_and_no_rerun_runs_beside(tmp_path):
    program = tmp_path / "fake_train.py"
    program.write_text(textwrap.dedent(ORPHAN_PROGRAM))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"program: {program}\nmethod: grid\nparameters:\n  sigma:\n    value: 0.5\n")
    out = tmp_path / "copt"
    runner = subprocess.Popen(
        [sys.executable, "-m", "unicr_pl.copt", str(sweep), "--out", str(out)],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pid_file = out / "single" / "pid"
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    rerun = sh("-m", "unicr_pl.copt", str(sweep), "--out", str(out), timeout=60)
    assert rerun.returncode == 2
    assert f"pid {runner.pid} (runner), {child} (run)" in rerun.stderr
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the run outlived its runner"
    again = sh("-m", "unicr_pl.copt", str(sweep), "--out", str(out), timeout=60,
               env={**ENV, "FAKE_TRAIN_SECONDS": "0"})  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "single" / "DONE").exists()


# ----------------------------------------------------------------------------- strict reading

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty (line 1)"),
        (HEADER, "has a header but no rows (line 1)"),
        (HEADER + "0\t1\t1\t0.5\t1\t0.1\n3\t1\t1\t0.", "line 3 is cut short"),
        (HEADER + "0\t1\t1\t0.5\t1\t0.1\t9\n", "line 2 has 7 fields, the header has 6"),
        (HEADER + "0\t1\t1\t0.5\n", "line 2 has 4 fields"),
        (HEADER + "0\t1\t1\tbig\t1\t0.1\n", "line 2 has a non-numeric idx or radius"),
    ],
)
def test_analyze_rejects_bad_files_with_the_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("certify.py analyze: error: ") and message in err[0]
    assert not out.exists()  # nothing written for bad input


def test_analyze_prints_the_manifest_and_writes_formats(ckpt, tmp_path, capsys):
    path = tmp_path / "r.tsv"
    assert certify(ckpt, path, "--max", "4", "--skip", "5") == 0
    capsys.readouterr()
    for fmt, ext in (("md", ".md"), ("latex", ".tex"), ("csv", ".csv")):
        out = tmp_path / f"a_{fmt}"
        assert cli.main(["analyze", str(path), "--format", fmt, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert (out / f"certified_accuracy_l2{ext}").is_file()
        assert "indices: 4 samples, 0 to 15 step 5" in printed
        assert read_manifest(path)["ckpt"] in printed
    assert "| r " in (tmp_path / "a_md" / "certified_accuracy_l2.md").read_text()
    assert "\\begin{tabular}" in (tmp_path / "a_latex" / "certified_accuracy_l2.tex").read_text()


def test_analyze_disk_full_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    import pandas as pd

    path = tmp_path / "c.tsv"
    path.write_text(HEADER + "0\t3\t3\t0.8\t1\t0.1\n")
    out = tmp_path / "a"

    def full(self, target, *a, **kw):
        Path(target).write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    assert cli.main(["analyze", str(path), "--out", str(out)]) == 2
    assert "error: No space left on device" in capsys.readouterr().err
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max", "-5"], "--max must be >= 1, or -1 for all samples, got -5"),
        (["--iopt", "true", "--iopt_sigma_step", "0"], "--iopt_sigma_step must be > 0"),
        (["--iopt", "true", "--iopt_sigma_bounds", "2", "1"], "--iopt_sigma_bounds must be 0 <"),
        (["--noise", "custom"], "--noise custom cannot be rebuilt from a flag"),
        (["--trainer.devices", "0"], "no device to certify on (--trainer.devices 0)"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_certify_bad_arguments_fail_before_any_folder(ckpt, tmp_path, capsys, extra, message):
    out = tmp_path / "new" / "r.tsv"
    assert certify(ckpt, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"certify.py certify: error: {err[0].split('error: ', 1)[1]}"]
    assert message in err[0]
    assert not (tmp_path / "new").exists()


def test_out_directory_and_unreadable_things(ckpt, tmp_path, capsys):
    assert certify(ckpt, tmp_path, "--max", "1") == 2
    assert "is a directory; give a file name" in capsys.readouterr().err
    state = torch.load(ckpt, weights_only=False)
    state["hyper_parameters"]["num_classes"] = 5  # weights of 10 classes
    wrong = tmp_path / "wrong.ckpt"
    torch.save(state, wrong)
    assert certify(str(wrong), tmp_path / "w.tsv") == 2
    err = capsys.readouterr().err
    assert "weights do not match the model settings" in err and "size mismatch" in err
    assert str(wrong) in err and len(err.strip().splitlines()) == 1
    state = torch.load(ckpt, weights_only=False)
    state["datamodule_hyper_parameters"].update(dataset="mnist", root=str(tmp_path / "none"))
    nodata = tmp_path / "nodata.ckpt"
    torch.save(state, nodata)
    assert certify(str(nodata), tmp_path / "n.tsv") == 2
    err = capsys.readouterr().err
    assert "mnist" in err and str(tmp_path / "none") in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w.tsv").exists() and not (tmp_path / "n.tsv").exists()


def test_permission_denied_is_one_line(ckpt, tmp_path, capsys, monkeypatch):
    def denied(self, *a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert certify(ckpt, tmp_path / "ro" / "r.tsv", "--max", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Permission denied" in err[0] and "r.tsv" in err[0]


def test_users_density_that_raises_is_one_line(capsys):
    argv = ["radius", "--noise", "custom", "--log-density",
            "tests.test_reliability:raising_density", "--pa", "0.9", "--dim", "4"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raised ZeroDivisionError: the user's bug" in err[0]


def test_curve_checks_before_computing(tmp_path, capsys):
    for extra, message in (
        (["--p", "1", "--pa-at", "1.5"], "--pa-at must be in (0.5, 1)"),
        (["--p", "0"], "(--p)"),
    ):
        out = tmp_path / "c"
        start = time.perf_counter()
        assert cli.main(["curve", "--dim", "4", "--out", str(out), *extra]) == 2
        assert time.perf_counter() - start < 2  # refused, not computed
        assert message in capsys.readouterr().err and not out.exists()


def test_nan_logits_name_the_true_sample(ckpt):
    from unicr_pl.lightning import UniCRModule
    from unicr_pl.lightning.certify import CertifyTask

    model = UniCRModule.load_from_checkpoint(ckpt, map_location="cpu")
    task = CertifyTask(model, model.noise, N0, N, ALPHA, 200, [2.0], False, 0, "x", {})

    class Broken(torch.nn.Module):  # NaN for the second input of the batch only
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[x.flatten(1).mean(1) > 50] = float("nan")
            return out

    task.smoothed.base = Broken()
    task.smoothed.normalize = torch.nn.Identity()
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 100.0
    with pytest.raises(ValueError, match="NaN or inf logits for sample 16"):
        task.predict_step((torch.tensor([12, 16]), x, torch.tensor([0, 1])), 0)


def test_pre_run_check(ckpt, tmp_path, capsys):
    assert certify(ckpt, tmp_path / "a.tsv", "--max", "1") == 0
    printed = capsys.readouterr().out
    p_top = ALPHA ** (1 / N)  # Clopper-Pearson lower bound at N of N
    expected = SIGMA * norm.ppf(p_top)  # Cohen: sigma/2 (Phi^-1(p) - Phi^-1(1 - p))
    line = next(ln for ln in printed.splitlines() if ln.startswith("largest radius"))
    l2 = float(line.split("l2 ")[1].split(",")[0])
    assert math.isclose(l2, expected, rel_tol=1e-3), line
    assert certify(ckpt, tmp_path / "b.tsv", "--max", "1", "--n", "5") == 0
    assert "n = 5 is too small to certify anything" in capsys.readouterr().out


def test_family_columns_and_analyze_radius_family(ckpt, tmp_path, capsys):
    path = tmp_path / "f.tsv"
    assert certify(ckpt, path, "--max", "4", "--norms", "2", "inf") == 0
    rows = read_results(path)
    for r in rows:  # the family value bounds the proven radius from above
        assert float(r["radius_family_l2"]) >= float(r["radius_l2"])
        assert float(r["radius_family_linf"]) >= float(r["radius_linf"])
    capsys.readouterr()
    for kind in ("proven", "family"):
        out = tmp_path / kind
        argv = ["analyze", str(path), "--radius", kind, "--format", "csv", "--out", str(out)]
        assert cli.main(argv) == 0
    assert "certified accuracy (l2, family)" in capsys.readouterr().out
