"""`train.py` / `unicr-train`: train a base classifier under noise with the Lightning CLI.

    python train.py                                   # digits, Gaussian sigma 0.25, ~30 s on CPU
    python train.py --noise gennormal --beta 0.75 --sigma 0.5
    python train.py --config configs/experiments/mnist_mlp.yaml --trainer.max_epochs 20
    python train.py --beta=0.75 --sigma=0.5           # the form `wandb agent` passes
    python train.py --ckpt_path outputs/<run>/checkpoints/last.ckpt   # resume in the same folder

Short flags (--noise --sigma --alpha --beta --backbone --dataset --epochs --method --m) set the
same values as --model.* / --data.* / --trainer.max_epochs and win over configs when both are
given. Everything a run writes goes to one folder, `<default_root_dir>/<dataset>-<noise>-
<params>[-<method>]-<date>-<id>/` (or `--run_dir`): config.yaml, run.json, checkpoints/ (with
last.ckpt), the W&B files and the certification callback's TSVs and plots.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from unicr_pl.callbacks import CertificationCallback
from unicr_pl.commands.errors import guarded
from unicr_pl.lightning import UniCRDataModule, UniCRModule
from unicr_pl.lightning.data import dataset_spec

SHORT = {  # short flag -> (section, key)
    "noise": ("model", "noise"),
    "sigma": ("model", "sigma"),
    "alpha": ("model", "alpha"),
    "beta": ("model", "beta"),
    "backbone": ("model", "backbone"),
    "dataset": ("data", "dataset"),
    "epochs": ("trainer", "max_epochs"),
    "method": ("model", "method"),
    "m": ("model", "m"),
}
RUN_FILE = "run.json"  # the run's W&B id and name, so that a resume finds them


def wandb_mode() -> tuple[str, str | None]:
    """W&B mode and a note for the user: offline unless a key is set, WANDB_MODE if valid.
    'online' without any API key falls back to offline (W&B would stop or prompt)."""
    mode = os.environ.get("WANDB_MODE")
    has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb_key()
    if mode not in ("online", "offline", "disabled", "dryrun", "run"):
        return ("online" if has_key else "offline"), None
    if mode in ("online", "run") and not has_key:
        return "offline", (
            "WANDB_MODE=online but no W&B API key (WANDB_API_KEY or `wandb login`): logging "
            "offline instead; upload later with `wandb sync <run folder>/wandb`"
        )
    return mode, None


def _netrc_has_wandb_key() -> bool:
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_folder_name(cfg, run_id: str) -> str:
    """`<dataset>-<noise>-<params>-<YYYYmmdd-HHMMSS>-<id>`, e.g.
    `digits-gaussian-sigma0.25-20260101-120000-3f9a1c2b`."""
    model = cfg.model
    params = [f"{k}{model[k]:g}" for k in ("alpha", "beta", "sigma") if model.get(k) is not None]
    noise = "none" if model.get("sigma") == 0 else model.noise
    method = [model.method] if model.get("method", "noise_aug") != "noise_aug" else []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return "-".join([cfg.data.dataset, noise, *params, *method, stamp, run_id])


def check_checkpoint(path: str) -> None:
    """A resume checkpoint must exist and be a Lightning training checkpoint (cheap: mmap)."""
    import torch

    where = f"{path} (--ckpt_path)"
    if not Path(path).is_file():
        raise ValueError(f"checkpoint not found: {where}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"not a PyTorch checkpoint: {where}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 (any unpickling failure means a corrupt file)
        raise ValueError(f"cannot read checkpoint {where}: {err}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "epoch", "optimizer_states"} <= set(ckpt):
        raise ValueError(f"not a Lightning training checkpoint (no optimizer state): {where}")


def check_writable(folder: Path, flag: str) -> None:
    """The nearest existing ancestor of `folder` must be a directory we can create files in."""
    probe = folder.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"cannot create {folder} ({flag}): {probe} is not a directory")
    try:  # a real write: os.access is fooled by read-only mounts and by root
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to {probe} ({flag}): {err.strerror}") from None


def resumed_run(ckpt_path: str | None) -> tuple[Path, dict] | None:
    """The run folder and run.json of `<run>/checkpoints/x.ckpt`, if it came from a run."""
    if not ckpt_path:
        return None
    run_dir = Path(ckpt_path).absolute().parent.parent
    info = run_dir / RUN_FILE
    if Path(ckpt_path).absolute().parent.name != "checkpoints" or not info.is_file():
        return None
    return run_dir, json.loads(info.read_text())


class UniCRCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--noise", type=str | None, default=None, help="noise family")
        parser.add_argument("--sigma", type=float | None, default=None, help="noise RMS")
        parser.add_argument("--alpha", type=float | None, default=None, help="noise scale")
        parser.add_argument("--beta", type=float | None, default=None, help="noise shape")
        parser.add_argument("--backbone", type=str | None, default=None, help="backbone name")
        parser.add_argument("--dataset", type=str | None, default=None, help="dataset name")
        parser.add_argument("--epochs", type=int | None, default=None, help="max epochs")
        parser.add_argument(
            "--method",
            type=str | None,
            default=None,
            help="training method: noise_aug, consistency, macer, smoothadv (configs/method/)",
        )
        parser.add_argument("--m", type=int | None, default=None, help="noisy copies per input")
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume from a checkpoint (its run folder and W&B run when it came from one)",
        )
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="use exactly this run folder (default: a new one under default_root_dir)",
        )
        parser.add_lightning_class_args(CertificationCallback, "certification")

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        for flag, (section, key) in SHORT.items():
            if cfg.get(flag) is not None:  # the short flag wins over configs
                cfg[section][key] = cfg[flag]
        if cfg.get("alpha") is not None and cfg.get("sigma") is None:
            cfg.model.sigma = None  # alpha sets the scale: drop the default sigma
        spec = dataset_spec(cfg.data.dataset)  # unknown dataset: error with the valid names
        for key, value in (
            ("num_classes", spec.num_classes),
            ("input_shape", spec.input_shape),
            ("mean", spec.mean),
            ("std", spec.std),
        ):
            if cfg.model.get(key) is None:
                cfg.model[key] = list(value) if isinstance(value, tuple) else value
        epochs = cfg.trainer.get("max_epochs")
        if epochs is not None and epochs != -1 and epochs < 1:
            raise ValueError(f"--epochs must be a positive integer or -1 (no limit), got {epochs}")
        if cfg.get("ckpt_path"):
            check_checkpoint(cfg.ckpt_path)
        self.run_dir, self.run_id = self._choose_run_folder()
        cfg.trainer.default_root_dir = str(self.run_dir)
        self._place_loggers()

    def _choose_run_folder(self) -> tuple[Path, str]:
        """A resume continues its run's folder and W&B id; otherwise a new folder."""
        cfg = self.config
        if "LOCAL_RANK" in os.environ and os.environ.get("UNICR_RUN_DIR"):
            # a DDP worker re-launched by Lightning: the launcher's folder, not a new one
            return Path(os.environ["UNICR_RUN_DIR"]), os.environ["UNICR_RUN_ID"]
        if cfg.get("run_dir"):
            run_dir = Path(cfg.run_dir)
            check_writable(run_dir, "--run_dir")
            info = run_dir / RUN_FILE
            run_id = json.loads(info.read_text())["id"] if info.is_file() else secrets.token_hex(4)
            return run_dir, run_id
        resumed = resumed_run(cfg.get("ckpt_path"))
        if resumed is not None:
            return resumed[0], resumed[1]["id"]
        root = Path(cfg.trainer.get("default_root_dir") or "outputs")
        check_writable(root, "--trainer.default_root_dir")
        run_id = secrets.token_hex(4)
        return root / run_folder_name(cfg, run_id), run_id

    def _place_loggers(self) -> None:
        """The default logger is W&B; every logger writes inside the run folder."""
        trainer = self.config.trainer
        if trainer.get("logger") in (None, True):
            mode, note = wandb_mode()
            if note:
                print(f"train.py: note: {note}", file=sys.stderr)
            trainer.logger = {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {"project": "unicr-pl", "mode": mode},
            }
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            if not hasattr(logger, "get") or logger.get("init_args") is None:
                continue  # `false`, or an object built in Python
            args = logger["init_args"]
            args["save_dir"] = str(self.run_dir)
            if logger["class_path"].endswith("WandbLogger"):
                args["id"], args["name"], args["resume"] = self.run_id, self.run_dir.name, "allow"

    def after_instantiate_classes(self) -> None:
        # Checkpoints beside the rest of the run (W&B would put them under its project folder),
        # and always a last.ckpt for the documented resume command.
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                # realpath, as ModelCheckpoint does: a resume must see the same dirpath to
                # continue its last.ckpt rather than start a last-v1.ckpt
                cb.dirpath = cb.dirpath or os.path.realpath(self.run_dir / "checkpoints")
                cb.save_last = True if cb.save_last is None else cb.save_last


def build_cli(args: list[str] | None = None) -> UniCRCLI:
    """Parses and checks the command line, instantiates model, data, trainer; writes nothing."""
    for arg in sys.argv[1:] if args is None else args:
        if arg.split("=")[0] == "--certification.alpha":
            raise ValueError(
                "--certification.alpha is now --certification.alpha0 (the failure probability); "
                "alpha means the noise scale"
            )
    return UniCRCLI(
        UniCRModule,
        UniCRDataModule,
        run=False,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"max_epochs": 15, "default_root_dir": "outputs"},
    )


def open_run_folder(cli: UniCRCLI) -> None:
    """Creates the run folder (after every check passed) and records its W&B id and name."""
    cli.run_dir.mkdir(parents=True, exist_ok=True)
    info = cli.run_dir / RUN_FILE
    if cli.trainer.is_global_zero and not info.exists():
        record = {"id": cli.run_id, "name": cli.run_dir.name, "created": time.strftime("%c")}
        info.write_text(json.dumps(record, indent=1) + "\n")
    os.environ["UNICR_RUN_DIR"], os.environ["UNICR_RUN_ID"] = str(cli.run_dir), cli.run_id


def main(args: list[str] | None = None) -> UniCRCLI:
    """Trains, then prints the certified-accuracy table and the certify command to run next."""
    cli = build_cli(args)
    cli.datamodule.check()  # a missing dataset: one line, before the run folder exists
    open_run_folder(cli)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    if not cli.trainer.is_global_zero:
        return cli
    for cb in cli.trainer.callbacks:
        if isinstance(cb, CertificationCallback):
            print("\nCertified accuracy on validation samples (last certification):")
            print(cb.format_table(cli.trainer))
    ckpt = cli.trainer.checkpoint_callback
    if ckpt is not None and (ckpt.best_model_path or ckpt.last_model_path):
        path, run_dir = _short(ckpt.best_model_path or ckpt.last_model_path), _short(cli.run_dir)
        print(f"\nRun folder: {run_dir}\nCheckpoint: {path}\nCertify the test split with:")
        print(f"  python certify.py certify --ckpt {path} --out {run_dir}/certify_test.tsv")
    return cli


def _short(path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    path, cwd = Path(os.path.realpath(path)), Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def run(argv: list[str] | None = None) -> int:
    """`train.py` / `unicr-train` behind the shared error boundary (one line, exit code 2)."""
    return guarded("train.py", lambda: main(argv))
