"""`certify.py attack`: attack the smoothed classifier of a certification run at scale x radius.

    python certify.py attack --ckpt <run>/checkpoints/last.ckpt --results results/run.tsv \
        --out outputs/attack --norm 1 2 inf --scale 1 2 --attack pgd apgd

For every certified, correctly classified image of the run, each attack (SmoothAdv's loss over
m noisy copies) finds a direction; the perturbation is rescaled to l_p norm exactly
scale x radius (not clipped: the certificate is for the unclipped input space) and the smoothed
prediction is re-estimated on fresh noise. A significant flip at scale <= 1 is reported as a
possible soundness failure.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np

from unicr_pl.radius.checks import norm_label

COLUMNS = [
    "idx", "label", "norm", "scale", "radius", "attack", "delta_norm", "flipped", "significant",
    "predict_after", "margin_before", "margin_after", "p_a_before", "p_a_after", "counts_after",
]  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack the smoothed classifier at scale x certified radius")
    p.add_argument("--ckpt", required=True, help="the checkpoint the results were certified with")
    p.add_argument("--results", required=True, help="result TSV of certify.py certify")
    p.add_argument("--out", required=True, help="output folder (attack.tsv, table.csv, table.md)")
    p.add_argument("--norm", nargs="+", default=["1", "2", "inf"], help="l_p orders attacked")
    p.add_argument("--scale", type=float, nargs="+", default=[1.0, 1.5, 2.0, 4.0])
    p.add_argument("--attack", nargs="+", default=["pgd", "apgd"], help="pgd, apgd")
    p.add_argument("--radius", choices=["proven", "family"], default="proven",
                   help="attack at the certificate (proven) or at radius_family_l<p>")  # fmt: skip
    p.add_argument("--m", type=int, default=32, help="noise draws per gradient (EOT)")
    p.add_argument("--steps", type=int, default=20, help="attack iterations")
    p.add_argument("--n", type=int, default=None, help="draws re-estimating g (default: run's n)")
    p.add_argument("--max", type=int, default=-1, help="attack at most this many images")
    p.add_argument("--seed", type=int, default=None, help="fresh-noise seed (default run's + 1)")
    p.add_argument("--root", default=None, help="override the data root")
    p.set_defaults(run=run)


def check(args) -> tuple[list[float], list[dict], dict]:
    """Every check before any attack: (norms, rows to attack, manifest)."""
    from unicr_pl.attacks import ATTACKS, describe_attacks
    from unicr_pl.commands.certify_dataset import _file_digest
    from unicr_pl.radius.checks import check_norm
    from unicr_pl.results import family_column, norm_column, read_manifest, read_results

    if importlib.util.find_spec("torchattacks") is None:
        raise ValueError("certify.py attack needs torchattacks: pip install 'unicr-pl[attack]'")
    if any(not s > 0 for s in args.scale):
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    unknown = [a for a in args.attack if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; valid: {describe_attacks()}")
    for flag in ("m", "steps", "n"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be >= 1, got {value}")
    norms = [check_norm(p) for p in args.norm]
    rows, manifest = read_results(args.results), read_manifest(args.results)
    if not Path(args.ckpt).is_file():
        raise ValueError(f"checkpoint not found: {args.ckpt}")
    if manifest.get("ckpt") != _file_digest(args.ckpt):
        raise ValueError(
            f"{args.results} was certified with another checkpoint "
            f"({manifest.get('ckpt_path', 'unknown')}), not {args.ckpt}"
        )
    if manifest.get("iopt", "None") != "None":
        raise ValueError(f"{args.results} is an I-OPT run (a noise per input): not supported")
    certified = [check_norm(p) for p in manifest.get("norms", [])]
    for p in norms:
        column = family_column(p) if args.radius == "family" else norm_column(p)
        if p not in certified or column not in rows[0]:
            raise ValueError(f"l_{p:g} was not certified in {args.results} (no {column} column)")
    return norms, rows, manifest


def run_noise(manifest: dict, model):
    """The noise of the certification run (the manifest's), rebuilt and checked."""
    from unicr_pl.noises import create_noise

    noise = create_noise(manifest["noise_name"], **manifest["noise_params"])
    if repr(noise) != manifest["noise"]:
        raise ValueError(f"cannot rebuild the run's noise {manifest['noise']} (got {noise!r})")
    if repr(noise) != repr(model.noise):
        print(f"attacking under the run's noise {noise!r}; trained under {model.noise!r}")
    return noise


def run(args) -> None:
    import torch

    from unicr_pl.attacks import ATTACKS, SmoothedLogProb
    from unicr_pl.commands.certify_dataset import load_checkpoint, load_model, load_split
    from unicr_pl.results import family_column, norm_column
    from unicr_pl.smoothing import SmoothedClassifier

    norms, rows, manifest = check(args)
    ckpt, model = load_checkpoint(args.ckpt), load_model(args.ckpt)
    noise = run_noise(manifest, model)
    split = argparse.Namespace(root=args.root, split=manifest["split"])
    _, dataset = load_split(split, ckpt)
    targets = [r for r in rows if r["correct"].strip() in ("1", "True", "true")]
    targets = [r for r in targets if int(r["predict"]) >= 0]
    targets = targets[: args.max] if args.max >= 0 else targets
    n, alpha0 = args.n or int(manifest["n"]), float(manifest["alpha0"])
    seed = args.seed if args.seed is not None else int(manifest["seed"]) + 1
    column = family_column if args.radius == "family" else norm_column
    base, normalize = model.backbone, model.normalize
    smoothed = SmoothedClassifier(base, noise, model.hparams.num_classes, normalize, 1000)
    attacked = SmoothedLogProb(base, noise, normalize, args.m)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # the attacks' own noise draws
    results, alarms = [], []
    with open(out / "attack.tsv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in targets:
            idx, label = int(r["idx"]), int(r["label"])
            x = dataset[idx][0].unsqueeze(0)
            before = estimate(smoothed, x, label, n, alpha0, seed, idx, 0, manifest)
            for p in norms:
                radius = float(r[column(p)])
                if not radius > 0:
                    continue
                for name in (a for a in args.attack if p in ATTACKS[a]):
                    for k, s in enumerate(args.scale):
                        row = attack_one(
                            attacked, smoothed, x, label, p, s * radius, name, args.steps, n,
                            alpha0, seed, idx, 1 + k, manifest,
                        )  # fmt: skip
                        row.update(idx=idx, label=label, norm=norm_label(p), scale=s, attack=name,
                                   radius=radius, margin_before=before["margin"],
                                   p_a_before=float(r["p_a"]))  # fmt: skip
                        writer.writerow([fmt(row[c]) for c in COLUMNS])
                        fh.flush()
                        results.append(row)
                        if s <= 1 and row["significant"]:
                            alarms.append(row)
    report(results, alarms, args, manifest, seed, n, alpha0, len(targets), out)


def estimate(smoothed, x, label, n, alpha0, seed, idx, stage, manifest) -> dict:
    """The smoothed prediction at x on n fresh draws: margin (share of c_A minus the best
    other class), its Clopper-Pearson p_A, and whether g provably left c_A (`significant`)."""
    from unicr_pl.smoothing import clopper_pearson_lower, clopper_pearson_upper, sample_seed

    counts = smoothed.counts(x, n, seeds=[sample_seed(seed, idx, 2 + stage)], indices=[idx])
    counts = counts[0].cpu().numpy()
    others = np.delete(counts, label)
    # The certificate promises P(c_A) > every other class; a flip is significant where the
    # upper bound of P(c_A) lies below the lower bound of another class's (alpha0 / 2 each).
    upper = float(clopper_pearson_upper(counts[label], n, alpha0 / 2))
    lower_other = float(clopper_pearson_lower(others.max(), n, alpha0 / 2))
    return {
        "predict_after": int(counts.argmax()),
        "flipped": bool(counts.argmax() != label),
        "significant": upper < lower_other,
        "margin": (int(counts[label]) - int(others.max())) / n,
        "p_a": float(clopper_pearson_lower(counts[label], n, alpha0)),
        "counts": " ".join(map(str, counts.tolist())),
    }


def attack_one(attacked, smoothed, x, label, p, eps, name, steps, n, alpha0, seed, idx, stage,
               manifest) -> dict:  # fmt: skip
    """One attack at l_p norm eps, then the re-estimate at x + delta."""
    import torch

    from unicr_pl.attacks import attack, lp_norm

    delta = attack(name, attacked, x, torch.tensor([label]), p, torch.tensor([eps]), steps)
    after = estimate(smoothed, x + delta, label, n, alpha0, seed, idx, stage, manifest)
    return {
        "delta_norm": float(lp_norm(delta, p)[0]),
        "flipped": after["flipped"],
        "significant": after["significant"],
        "predict_after": after["predict_after"],
        "margin_after": after["margin"],
        "p_a_after": after["p_a"],
        "counts_after": after["counts"],
    }


def fmt(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def summary_table(results: list[dict]):
    """Defense accuracy (share of attacked images whose smoothed prediction stayed c_A) per
    attack and norm (rows) and scale (columns), as a pandas DataFrame."""
    import pandas as pd

    frame = pd.DataFrame(results)
    frame["defended"] = ~frame["flipped"].astype(bool)
    table = frame.pivot_table(
        index=["attack", "norm"], columns="scale", values="defended", aggfunc="mean"
    )
    table.columns = [f"scale {s:g}" for s in table.columns]
    table["images"] = frame.groupby(["attack", "norm"])["idx"].nunique().astype(int)
    return table


def report(results, alarms, args, manifest, seed, n, alpha0, images, out: Path) -> None:
    """Prints and writes the table; shouts about significant flips at scale <= 1."""
    if not results:
        print(f"no certified, correctly classified image to attack in {args.results}")
        return
    table = summary_table(results)
    table.to_csv(out / "table.csv", float_format="%.3f")
    flat = table.reset_index()
    (out / "table.md").write_text(flat.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(f"defense accuracy of the smoothed classifier ({images} images, n = {n}):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    within = [r for r in results if r["scale"] <= 1]
    print(
        f"scale <= 1: {sum(r['flipped'] for r in within)} of {len(within)} attacks flipped the "
        f"estimated prediction, {len(alarms)} significantly (expected <= about "
        f"{2 * alpha0 * len(within):.3g} if every certificate holds: alpha0 = {alpha0} each)"
    )
    for a in alarms:
        print(
            f"POSSIBLE SOUNDNESS FAILURE: image {a['idx']} (label {a['label']}) moved to class "
            f"{a['predict_after']} by {a['attack']} in {a['norm']} at {a['scale']:g} x radius "
            f"{a['radius']:.6g}; reproduce: certify.py attack --ckpt {args.ckpt} --results "
            f"{args.results} --norm {a['norm']} --scale {a['scale']:g} --attack {a['attack']} "
            f"--m {args.m} --steps {args.steps} --n {n} --seed {seed} (noise "
            f"{manifest['noise']}, alpha0 {alpha0}, counts {a['counts_after']})",
            file=sys.stderr,
        )
    print(f"rows: {out / 'attack.tsv'}; table: {out / 'table.csv'}, {out / 'table.md'}")
