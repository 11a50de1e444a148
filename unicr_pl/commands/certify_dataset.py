"""`certify.py certify`: certify a split of the data a `train.py` checkpoint was trained on.

    python certify.py certify --ckpt outputs/.../last.ckpt --n 100000 --norms 1 2 inf
    python certify.py certify --ckpt ... --trainer.devices 2 --trainer.strategy ddp

Model, data and noise come back from the checkpoint (each can be overridden; another noise than
the training one is allowed and said). Rows are flushed as produced; running the same command
again resumes after the last complete row; several devices shard the split and the shards are
merged into one TSV ordered by idx.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unicr_pl.radius.checks import norm_label
from unicr_pl.results import (
    FileLock,
    ResultWriter,
    code_version,
    done_indices,
    finalize,
    shard_paths,
)


def build_parser():
    from lightning.pytorch import Trainer
    from lightning.pytorch.cli import LightningArgumentParser

    from unicr_pl.noises import list_noises

    p = LightningArgumentParser(prog="certify.py certify", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=str, required=True, help="checkpoint written by train.py")
    p.add_argument("--split", type=str, default="test", help="test or val")
    p.add_argument("--skip", type=int, default=1, help="certify every k-th sample")
    p.add_argument("--max", type=int, default=-1, help="at most this many samples (-1: all)")
    p.add_argument("--n0", type=int, default=100, help="selection draws")
    p.add_argument("--n", type=int, default=100_000, help="estimation draws")
    p.add_argument("--alpha0", type=float, default=0.001, help="failure probability")
    p.add_argument("--batch", type=int, default=1000, help="noisy copies per forward pass")
    p.add_argument(
        "--precision",
        type=str,
        default="32-true",
        choices=["32-true", "bf16-mixed", "16-mixed"],
        help="autocast around the classifier's forward only; mixed precision changes rows",
    )
    p.add_argument(
        "--channels_last",
        type=bool,
        default=False,
        help="channels-last convolutions (faster; the logits change in the last bits)",
    )
    p.add_argument("--norms", type=str, nargs="+", default=["1", "2", "inf"], help="l_p orders")
    p.add_argument("--multiclass", type=bool, default=False, help="bound p_B separately")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--out", type=str | None, default=None, help="result TSV")
    p.add_argument("--root", type=str | None, default=None, help="override the data root")
    flag_noises = ", ".join(n for n in list_noises() if n != "custom")  # custom: Python API only
    p.add_argument("--noise", type=str | None, default=None, help=f"one of {flag_noises}")
    p.add_argument("--sigma", type=float | None, default=None, help="override noise RMS")
    p.add_argument("--noise_alpha", type=float | None, default=None, help="override noise scale")
    p.add_argument("--beta", type=float | None, default=None, help="override noise shape")
    p.add_argument("--iopt", type=bool, default=False, help="I-OPT: tune the noise per input")
    p.add_argument("--iopt_family", type=str, default="gennormal", help="family searched")
    p.add_argument("--iopt_sigma_step", type=float, default=0.05, help="step of sigma")
    p.add_argument("--iopt_beta_step", type=float, default=0.25, help="step of beta")
    p.add_argument(
        "--iopt_sigma_bounds", type=float, nargs=2, default=[0.02, 4.0], help="sigma from, to"
    )
    p.add_argument(
        "--iopt_beta_bounds", type=float, nargs=2, default=[0.25, 5.0], help="beta from, to"
    )
    p.add_argument("--iopt_rounds", type=int, default=10, help="passes at most")
    p.add_argument("--iopt_select", type=int, default=1000, help="draws per candidate")
    p.add_argument(
        "--iopt_sound",
        type=bool,
        default=True,
        help="bound p_A on fresh draws after the search (see README)",
    )
    p.add_lightning_class_args(Trainer, "trainer")
    return p


def load_checkpoint(path: str) -> dict:
    """Reads a checkpoint and checks that train.py wrote it (clear errors otherwise)."""
    import torch

    if not Path(path).is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 (any unpickling failure means a corrupt file)
        raise ValueError(f"cannot read checkpoint {path}: {err}") from None
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if not {"num_classes", "input_shape", "noise"} <= set(hp) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a unicr-pl train.py checkpoint (no model settings)")
    if "datamodule_hyper_parameters" not in ckpt:
        raise ValueError(f"{path} carries no data settings (was it written by train.py?)")
    return ckpt


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_args(cfg) -> list[float]:
    """Every check that needs neither the checkpoint nor the data; returns the norms."""
    from unicr_pl.noises import list_noises
    from unicr_pl.radius.checks import check_norm
    from unicr_pl.smoothing import check_counts_args

    check_counts_args(n0=cfg.n0, n=cfg.n, alpha0=cfg.alpha0)
    if cfg.skip < 1 or cfg.batch < 1:
        raise ValueError("--skip and --batch must be >= 1")
    if cfg.max == 0 or cfg.max < -1:
        raise ValueError(f"--max must be >= 1, or -1 for all samples, got {cfg.max}")
    if cfg.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {cfg.seed}")
    if cfg.split not in ("test", "val"):
        raise ValueError(f"--split must be test or val, got {cfg.split!r}")
    if cfg.noise == "custom":
        raise ValueError(
            "--noise custom cannot be rebuilt from a flag: certify a custom density through "
            "the Python API (unicr_pl.lightning.CertifyTask) (--noise)"
        )
    if cfg.noise is not None and cfg.noise not in list_noises():
        raise ValueError(
            f"unknown noise {cfg.noise!r}; valid: {', '.join(list_noises())} (--noise)"
        )
    if cfg.out is not None and Path(cfg.out).is_dir():
        raise ValueError(f"--out {cfg.out} is a directory; give a file name, e.g. {cfg.out}/r.tsv")
    if cfg.iopt:
        if cfg.multiclass:
            raise ValueError("--iopt works in the binary case; drop --multiclass")
        for name in ("sigma", "beta"):
            step, (lo, hi) = getattr(cfg, f"iopt_{name}_step"), getattr(cfg, f"iopt_{name}_bounds")
            if not step > 0:
                raise ValueError(f"--iopt_{name}_step must be > 0, got {step}")
            if not 0 < lo < hi:
                raise ValueError(f"--iopt_{name}_bounds must be 0 < low < high, got {lo} {hi}")
        if cfg.iopt_rounds < 1 or cfg.iopt_select < 1:
            raise ValueError("--iopt_rounds and --iopt_select must be >= 1")
    try:
        return [check_norm(p) for p in cfg.norms]
    except ValueError as err:
        raise ValueError(f"{err} (--norms)") from None


def make_trainer(cfg):
    """The predict Trainer; a device that is not there is a ValueError naming the flag."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    kwargs = {**cfg.trainer, "logger": False, "enable_checkpointing": False}
    kwargs.pop("callbacks", None)
    kwargs["use_distributed_sampler"] = False  # CertifyTask shards the inputs itself
    devices = kwargs.get("devices")
    if isinstance(devices, int | str) and str(devices).strip() in ("0", "[]", ""):
        raise ValueError(f"no device to certify on (--trainer.devices {devices})")
    try:
        return Trainer(**kwargs)
    except (MisconfigurationException, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"device unavailable: {first} (--trainer.accelerator/devices)") from None


def load_model(path: str):
    """The UniCRModule of a checkpoint; weights that do not fit its settings are a ValueError."""
    from unicr_pl.lightning import UniCRModule

    try:
        model = UniCRModule.load_from_checkpoint(path, map_location="cpu")
    except RuntimeError as err:  # load_state_dict: size mismatch, missing or unexpected keys
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln), lines[-1] if lines else "")
        raise ValueError(f"weights do not match the model settings: {detail} ({path})") from None
    except (TypeError, KeyError) as err:
        raise ValueError(f"cannot rebuild the model: {err} ({path})") from None
    model.eval()
    return model


def certify_noise(cfg, model):
    """The training noise, or the one the flags ask for (keeping the training RMS)."""
    from unicr_pl.noises import create_noise

    hp, noise = model.hparams, model.noise
    if any(v is not None for v in (cfg.noise, cfg.sigma, cfg.noise_alpha, cfg.beta)):
        # Without a new scale, keep the training noise's RMS (not the family's default of 1).
        keep_rms = cfg.sigma is None and cfg.noise_alpha is None and model.noise is not None
        noise = create_noise(
            cfg.noise or hp.noise,
            sigma=model.noise.sigma if keep_rms else cfg.sigma,
            alpha=cfg.noise_alpha,
            beta=cfg.beta
            if cfg.beta is not None
            else (hp.beta if (cfg.noise or hp.noise) == hp.noise else None),
        )
        print(f"certifying under {noise!r}; the model was trained under {model.noise!r}")
    if noise is None:
        raise ValueError("the checkpoint was trained without noise: give --noise and --sigma")
    return noise


def load_split(cfg, ckpt: dict):
    """(data settings, the split's dataset); missing data is a ValueError naming the root."""
    from unicr_pl.lightning import UniCRDataModule

    accepted = inspect.signature(UniCRDataModule.__init__).parameters
    data_hp = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if k in accepted}
    if cfg.root:
        data_hp["root"] = cfg.root
    try:
        data = UniCRDataModule(**data_hp)
        data.setup("predict")
    except (FileNotFoundError, RuntimeError) as err:
        root = data_hp.get("root")
        raise ValueError(f"cannot load the {data_hp.get('dataset')} data: {err} ({root})") from None
    return data_hp, data.test_set if cfg.split == "test" else data.val_set


def iopt_setup(cfg, noise):
    """(IOPTConfig or None, the starting noise)."""
    from unicr_pl.iopt import IOPTConfig
    from unicr_pl.noises import create_noise

    if not cfg.iopt:
        return None, noise
    steps = {"sigma": cfg.iopt_sigma_step}
    bounds = {"sigma": tuple(cfg.iopt_sigma_bounds)}
    if cfg.iopt_family in ("gennormal", "lapgauss", "expmix", "pareto"):
        steps["beta"], bounds["beta"] = cfg.iopt_beta_step, tuple(cfg.iopt_beta_bounds)
    config = IOPTConfig(
        cfg.iopt_family, steps, bounds, cfg.iopt_rounds, cfg.iopt_select, cfg.iopt_sound
    )
    if noise.name != cfg.iopt_family:  # start the search from the same RMS
        beta = {"beta": 2.0} if cfg.iopt_family == "gennormal" else {}
        noise = create_noise(cfg.iopt_family, sigma=noise.sigma, **beta)
    return config, noise


def run(argv: list[str]) -> None:
    """`certify.py certify`: every check first, then certify what is not done yet, resuming."""
    from unicr_pl.lightning.certify import CertifyTask

    check_renamed_flags(argv)
    cfg = build_parser().parse_args(argv)
    norms = check_args(cfg)
    trainer = make_trainer(cfg)
    ckpt = load_checkpoint(cfg.ckpt)
    model = load_model(cfg.ckpt)
    noise = certify_noise(cfg, model)
    data_hp, dataset = load_split(cfg, ckpt)
    indices = sample_indices(cfg, len(dataset))
    iopt_config, noise = iopt_setup(cfg, noise)
    out = Path(cfg.out or f"results/{Path(cfg.ckpt).stem}_{noise.name}_{cfg.split}.tsv")
    settings = row_settings(cfg, noise, norms, iopt_config, data_hp)
    manifest = {"indices": indices, "code_version": code_version(), "ckpt_path": cfg.ckpt}
    task = CertifyTask(
        model, noise, cfg.n0, cfg.n, cfg.alpha0, cfg.batch, norms, cfg.multiclass, cfg.seed,
        str(out), settings, iopt_config, manifest, cfg.precision, cfg.channels_last,
    )  # fmt: skip
    if _secondary_rank():  # started by rank 0's launcher, which holds the locks and checked
        done = set().union(*(done_indices(f) for f in [out, *shard_paths(out)]))
        task.set_inputs(dataset, [i for i in indices if i not in done], per_step(cfg))
        _predict(trainer, task)
        return
    with output_lock(out):
        todo = [i for i in indices if i not in finished(out, norms, task)]
        print(
            f"certifying {len(todo)} of {len(indices)} samples ({len(indices) - len(todo)} done) "
            f"-> {out}",
            flush=True,
        )
        print_reach(task, cfg, norms)
        if todo:
            task.set_inputs(dataset, todo, per_step(cfg))
            _predict(trainer, task)
        if trainer.is_global_zero:
            finalize(out, lock=False)
            summarize(out, norms[0])


def check_renamed_flags(argv: list[str]) -> None:
    """A flag renamed since (argparse would even take `--alpha` as short for `--alpha0`)."""
    for arg in argv:
        if arg == "--alpha" or arg.startswith("--alpha="):
            raise ValueError(
                "--alpha is now --alpha0 (the failure probability); alpha means the noise "
                "scale everywhere else, and --noise_alpha overrides it here"
            )


def sample_indices(cfg, size: int) -> list[int]:
    """The dataset indices to certify: every --skip-th, at most --max of them."""
    indices = list(range(0, size, cfg.skip))
    return indices[: cfg.max] if cfg.max >= 0 else indices


def row_settings(cfg, noise, norms: list[float], iopt_config, data_hp: dict) -> dict:
    """What a row depends on, which a resumed file must match (not --skip / --max: they only
    choose which rows to produce; CertifyTask adds the precision)."""
    from unicr_pl.smoothing import DRAW_BLOCK

    return {
        "iopt": repr(iopt_config),
        "ckpt": _file_digest(cfg.ckpt),
        "noise": repr(noise),
        "noise_name": noise.name,
        "noise_params": noise.params(),
        "n0": cfg.n0,
        "n": cfg.n,
        "alpha0": cfg.alpha0,
        "split": cfg.split,
        "norms": [str(p) for p in norms],
        "multiclass": cfg.multiclass,
        "seed": cfg.seed,
        "seeding": f"sample_seed(seed, idx, stage), blocks of {DRAW_BLOCK} draws",
        "dataset": data_hp.get("dataset"),
    }


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Holds the output's lock; an unwritable or locked path fails before any work."""
    lock = FileLock(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        raise ValueError(f"cannot write results to {out}: {err.strerror}") from None
    try:
        yield
    finally:
        lock.release()


def finished(out: Path, norms: list[float], task) -> set[int]:
    """Indices already certified in the output and its shards; opening each with this run's
    settings refuses a file written with others."""
    writer = ResultWriter(out, norms, task.settings, task.extra, task.manifest, lock=False)
    done = set(writer.done)
    writer.close()
    for part in shard_paths(out):
        shard = ResultWriter(part, norms, task.settings, task.extra, task.manifest)
        done |= shard.done
        shard.close()
    return done


def per_step(cfg) -> int:
    """Inputs per predict step: as many as fit in one forward pass of --batch noisy copies."""
    return max(1, cfg.batch // cfg.n)


def _secondary_rank() -> bool:
    """A rank > 0 that Lightning's `ddp` launcher (or torchrun) started by rerunning the
    command: it must neither lock nor check the output again (rank 0 did, and holds it)."""
    return any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _predict(trainer, task) -> None:
    import torch

    try:
        with torch.no_grad():
            trainer.predict(task, return_predictions=False)
    finally:
        for out in (task.writer, task.history):
            if out is not None:
                out.close()
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        trainer.strategy.barrier()


def print_reach(task, cfg, norms: list[float]) -> None:
    """The largest radius these settings can certify (all n draws correct, p_A = alpha0^(1/n),
    the Clopper-Pearson bound at n of n), and a warning if even that cannot certify."""
    # Multi-class: alpha0 / 2 each side; no runner-up draw bounds p_B by 1 - p_top as well.
    p_top = (cfg.alpha0 / 2 if cfg.multiclass else cfg.alpha0) ** (1.0 / cfg.n)
    if p_top <= 0.5:
        print(
            f"warning: n = {cfg.n} is too small to certify anything at alpha0 = {cfg.alpha0}: "
            f"even with every draw correct p_A <= {p_top:.4g} <= 1/2, so every sample abstains",
            flush=True,
        )
        return
    if task.radius is not None:
        radii = task.radius(np.array([p_top]), np.array([1 - p_top]))
        reach = {p: float(radii[p][0]) for p in norms}
    else:  # I-OPT: the starting noise
        reach = {p: task._candidate_radius(task.noise, p_top, p) for p in norms}
    text = ", ".join(f"{norm_label(p)} {r:.4g}" for p, r in reach.items())
    print(f"largest radius these settings can certify (p_A = {p_top:.6g}): {text}", flush=True)


def summarize(out: Path, norm: float) -> None:
    """One line: certified accuracy at a few radii, abstention rate, seconds per image."""
    from unicr_pl.metrics import certified_accuracy
    from unicr_pl.results import radius_and_correct, read_results

    rows = read_results(out, allow_empty=True)
    if not rows:
        print("no rows")
        return
    radius, correct = radius_and_correct(rows, norm)
    abstain = np.mean([int(r["predict"]) == -1 for r in rows])
    seconds = np.mean([float(r["time"]) for r in rows])
    accs = ", ".join(
        f"{r:g}: {certified_accuracy(radius, correct, r):.3f}" for r in (0.0, 0.25, 0.5, 1.0)
    )
    print(
        f"{len(rows)} samples | certified accuracy ({norm_label(norm)}) at {accs} | "
        f"abstained {abstain:.1%} | {seconds:.3f} s/image | {out}",
        file=sys.stdout,
    )
