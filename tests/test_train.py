"""train.py on the Lightning CLI: end to end, short flags, configs, DDP on 2 CPU processes, one
folder per run, resume, and bad input (one line before any folder exists)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["WANDB_MODE"] = "disabled"  # never reach for the network in tests

import train  # noqa: E402
import unicr_pl.commands.train as train_module  # noqa: E402

FAST = [
    "--dataset",
    "synthetic",
    "--epochs",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--certification.max_samples",
    "40",
    "--certification.n",
    "200",
]


def run_train(*args, cwd, env=None):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_end_to_end_twice_in_one_directory(tmp_path):
    printed = []
    for _ in range(2):  # the second run gets its own folder; nothing of it lands in the first
        out = run_train(
            *FAST, "--noise", "gennormal", "--beta=0.75", "--sigma=0.5",
            "--certification.norms=[2]", cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Certified accuracy on validation samples" in out.stdout
        assert "R_score" in out.stdout and out.stdout.count("\nl2 ") == 1
        printed.append(out.stdout.split("certify.py certify ")[1].split())
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # nothing else in the cwd
    runs = sorted((tmp_path / "outputs").iterdir())
    assert len(runs) == 2 and all(
        r.name.startswith("synthetic-gennormal-beta0.75-sigma0.5-") for r in runs
    )
    for run, args in zip(runs, sorted(printed), strict=True):
        assert {p.name for p in run.iterdir()} >= {"config.yaml", "run.json", "checkpoints"}
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert args[0] == "--ckpt" and (tmp_path / args[1]).is_file()  # the printed command
        assert Path(args[1]).parts[:2] == ("outputs", run.name) and args[2] == "--out"
    ids = {json.loads((r / "run.json").read_text())["id"] for r in runs}
    assert len(ids) == 2


def test_short_flags_win_over_configs(tmp_path):
    cfg = tmp_path / "noise.yaml"
    cfg.write_text("model:\n  noise: laplace\n  sigma: 0.5\n")
    cli = train.build_cli(["--config", str(cfg), "--sigma", "0.3", *FAST])
    assert cli.model.noise.name == "laplace"
    assert abs(cli.model.noise.sigma - 0.3) < 1e-12
    cli = train.build_cli(["--config", str(cfg), *FAST, "--model.sigma", "0.7"])
    assert abs(cli.model.noise.sigma - 0.7) < 1e-12
    cli = train.build_cli([*FAST, "--noise=gennormal", "--beta=1.5", "--alpha=0.4"])
    assert cli.model.noise.beta == 1.5 and cli.model.noise.alpha == 0.4


# Every train.py config; the W&B sweep files under configs/sweeps are tested in test_copt.py.
CONFIGS = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "configs").rglob("*.yaml")
    if p.parent.name != "sweeps"
)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_instantiates(config):
    cli = train.build_cli(
        [
            "--config",
            str(ROOT / config),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.strategy",
            "auto",
            "--trainer.precision",
            "32",
            "--trainer.logger",
            "false",
        ]
    )
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None


def test_bad_names_are_clear(tmp_path, capsys):
    out = run_train("--dataset", "nope", cwd=tmp_path)  # the real entry point
    assert out.returncode == 2 and "valid names: cifar10, digits" in out.stderr
    assert "Traceback" not in out.stderr
    cases = {  # the rest in this process: no interpreter start-up per case
        "unknown backbone 'vgg'; valid names": ["--backbone", "vgg"],
        "not_a_key": ["--model.not_a_key", "1"],
        "beta must be in (0, inf)": ["--noise", "gennormal", "--beta", "-1"],
    }
    for message, args in cases.items():
        try:
            code, err = in_process(args, tmp_path, capsys)
        except SystemExit as exit_:  # jsonargparse's own usage errors
            code, err = exit_.code, capsys.readouterr().err
        assert code == 2 and message in err, (args, err[-1000:])


def test_ddp_two_cpu_processes(tmp_path):
    out = run_train(
        *FAST,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp_spawn",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Certified accuracy on validation samples" in out.stdout


def test_resume_continues_the_same_run_folder_and_wandb_run(tmp_path):
    root = tmp_path / "runs"
    env = {"WANDB_MODE": "offline"}
    args = [*FAST, "--epochs", "1", "--trainer.default_root_dir", str(root)]
    first = run_train(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = root.iterdir()
    run_id = json.loads((run / "run.json").read_text())["id"]
    ckpt = run / "checkpoints" / "last.ckpt"
    out = run_train(*args, "--epochs", "2", "--ckpt_path", str(ckpt), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Restored all states from the checkpoint" in out.stdout + out.stderr
    assert list(root.iterdir()) == [run]  # no second run folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=1-step=12.ckpt",  # the resumed epoch, beside the same last.ckpt (no last-v1)
        "last.ckpt",
    ]
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{run_id}") for p in offline)


def in_process(args, tmp_path, capsys):
    """train.run in this process (no Lightning import per case): (exit code, stderr)."""
    code = train.run([*FAST, "--trainer.default_root_dir", str(tmp_path / "out"), *args])
    return code, capsys.readouterr().err


def test_bad_input_is_one_line_before_any_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    (tmp_path / "afile").write_text("")
    cases = {
        "--epochs must be a positive integer or -1 (no limit), got -5": ["--epochs", "-5"],
        f"not a PyTorch checkpoint: {junk} (--ckpt_path)": ["--ckpt_path", str(junk)],
        "checkpoint not found: nope.ckpt (--ckpt_path)": ["--ckpt_path", "nope.ckpt"],
        f"{tmp_path / 'afile'} is not a directory": ["--trainer.default_root_dir", "afile/x"],
        f"mnist not found in {tmp_path / 'nodata' / 'MNIST' / 'raw'}: download it with "
        "--data.download true": ["--dataset", "mnist", "--data.root", "nodata"],
    }
    for message, args in cases.items():
        code, err = in_process(args, tmp_path, capsys)
        lines = [line for line in err.splitlines() if line.startswith("train.py")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "junk.ckpt"]


def test_read_only_root_dir_is_refused(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the probe meet what a user would meet

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(train_module.tempfile, "TemporaryFile", refuse)
    code = train.run([*FAST, "--trainer.default_root_dir", str(ro / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write to {ro} (--trainer.default_root_dir)" in err
    assert list(ro.iterdir()) == []


def test_missing_dataset_names_the_path_from_unicr_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNICR_DATA", str(tmp_path / "shared"))
    code, err = in_process(["--dataset", "fashion_mnist"], tmp_path, capsys)
    assert code == 2 and f"{tmp_path / 'shared' / 'FashionMNIST' / 'raw'}" in err
    monkeypatch.delenv("UNICR_DATA")
    monkeypatch.chdir(tmp_path)
    code, err = in_process(["--dataset", "imagenet"], tmp_path, capsys)
    assert code == 2 and f"imagenet not found in {tmp_path / 'data'}" in err
    assert not (tmp_path / "out").exists()


def test_wandb_online_without_key_falls_back_to_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    cli = train.build_cli([*FAST, "--trainer.default_root_dir", str(tmp_path / "out")])
    assert cli.trainer.logger._wandb_init["mode"] == "offline"
    assert "no W&B API key" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert train_module.wandb_mode() == ("online", None)
    assert not (tmp_path / "out").exists()


def test_nan_loss_stops_training_at_once(tmp_path, capsys):
    # sigma 1e39 overflows float32: the first noisy batch is inf, its loss nan
    code, err = in_process(["--sigma", "1e39", "--epochs", "5"], tmp_path, capsys)
    assert code == 2
    assert "train.py: error: training loss is nan at epoch 0, step 0 (batch 0)" in err
    assert not list((tmp_path / "out").rglob("*.ckpt"))  # stopped before any epoch ended
