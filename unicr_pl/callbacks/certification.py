"""`CertificationCallback`: certify validation samples while training and log the curves.

Every `every_n_epochs` validation epochs (and after the last one), up to `max_samples`
validation samples are certified with `unicr_pl.smoothing` (n0 selection draws, n estimation
draws, Clopper-Pearson at alpha0) under the module's own noise; radii come from the same
per-sample look-up as certify.py (`unicr_pl.radius.lookup.SampleRadius`). Under DDP each
rank certifies its shard (samples rank, rank + world, ...), the torchmetrics states are synced,
and rank 0 logs.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from unicr_pl.metrics import CertifiedAccuracy, RobustnessScore
from unicr_pl.radius.checks import check_norm, norm_label
from unicr_pl.radius.lookup import SampleRadius
from unicr_pl.results import (
    read_callback_table,
    remove_callback_table,
    write_callback_samples,
    write_callback_table,
)
from unicr_pl.smoothing import ABSTAIN, SmoothedClassifier, check_counts_args


class CertificationCallback(L.Callback):
    """Certified accuracy, robustness score and curves of the smoothed model during training.

    Args:
        every_n_epochs: certify every k validation epochs (and always after the last).
        max_samples: validation samples to certify (m), split across ranks.
        n0, n, alpha0: CERTIFY's selection draws, estimation draws and confidence.
        norms: l_p orders to report.
        radii: radius grid of the logged certified accuracies; for l_inf it is read in units
            of 1/255, as in the paper's tables.
        batch_size: noisy copies per forward pass.
        seed: seed of the certification draws (fixed, so epochs are comparable).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        max_samples: int = 200,
        n0: int = 50,
        n: int = 500,
        alpha0: float = 0.001,
        norms: list[str | float] | None = None,
        radii: list[float] | None = None,
        batch_size: int = 2000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_counts_args(n0=n0, n=n, alpha0=alpha0)
        if every_n_epochs < 1 or max_samples < 1:
            raise ValueError("every_n_epochs and max_samples must be >= 1")
        self.every_n_epochs, self.max_samples = every_n_epochs, max_samples
        self.n0, self.n, self.alpha0, self.batch_size, self.seed = n0, n, alpha0, batch_size, seed
        self.norms = [check_norm(p) for p in (norms or ["1", "2", "inf"])]
        self.radii = list(radii or [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
        self.last_table: dict[str, list[float]] | None = None  # proven radii
        self.last_table_family: dict[str, list[float]] | None = None  # structured family
        self._lookups: dict = {}

    def _radii(self, module, dim: int) -> SampleRadius:
        # The same per-sample radii as certify.py (closed form for Gaussian noise, a dense
        # cached curve otherwise), built once per (noise, d).
        key = (module.noise.identity(), dim)  # the law's content hash: repr rounds to 6 digits
        if key not in self._lookups:
            self._lookups[key] = SampleRadius(module.noise, dim, self.norms)
        return self._lookups[key]

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # a table from an earlier run must never be shown as ours
            remove_callback_table(trainer.default_root_dir)

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or module.noise is None:
            return
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        self.certify(trainer, module)

    @torch.no_grad()
    def certify(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        data = trainer.datamodule.val_set
        indices = list(
            range(trainer.global_rank, min(self.max_samples, len(data)), trainer.world_size)
        )
        smoothed = SmoothedClassifier(
            module.backbone,
            module.noise,
            module.hparams.num_classes,
            module.normalize,
            self.batch_size,
        )
        was_training = module.training
        module.eval()
        gen = torch.Generator(device=module.device).manual_seed(self.seed + trainer.global_rank)
        xs, ys = zip(*(data[i] for i in indices), strict=True) if indices else ((), ())
        preds, p_as = [], []
        step = max(1, self.batch_size // self.n)
        for start in range(0, len(xs), step):
            x = torch.stack(xs[start : start + step]).to(module.device)
            cert = smoothed.certify(
                x, self.n0, self.n, self.alpha0, gen, first_index=indices[start]
            )
            preds.append(cert.prediction)
            p_as.append(cert.p_a)
        module.train(was_training)
        pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
        p_a = np.concatenate(p_as) if p_as else np.zeros(0)
        correct = torch.as_tensor(pred == np.asarray([int(y) for y in ys], dtype=np.int64))
        dim = int(np.prod(module.hparams.input_shape))
        look = self._radii(module, dim)
        # Proven radii (sound over all directions) and the structured-family values beside
        # them (the paper-comparable upper bound), logged with a `_family` suffix.
        radii, family = look.both(p_a, 1 - p_a)  # {norm: [B]} each, binary case
        table, table_family = {}, {}
        per_sample = {
            "idx": indices,
            "label": [int(y) for y in ys],
            "predict": pred.tolist(),
            "correct": correct.int().tolist(),
            "p_a": p_a.tolist(),
        }
        for p in self.norms:
            for values_by_norm, out, suffix in (
                (radii, table, ""),
                (family, table_family, "_family"),
            ):
                radius = torch.as_tensor(values_by_norm[p] * (pred != ABSTAIN))
                per_sample[f"radius{suffix}_{norm_label(p)}"] = radius.tolist()
                grid = [r / 255 for r in self.radii] if math.isinf(p) else self.radii
                acc = CertifiedAccuracy(grid).to(module.device)
                score = RobustnessScore().to(module.device)
                acc.update(radius, correct)
                score.update(radius, correct)
                values = acc.compute().cpu().numpy()  # synced across ranks
                out[norm_label(p)] = [*values.tolist(), float(score.compute())]
                unit = "/255" if math.isinf(p) else ""
                for r, v in zip(self.radii, values, strict=True):
                    # Already synced by torchmetrics: every rank logs the same value.
                    module.log(
                        f"val/certified_accuracy_{norm_label(p)}{suffix}@{r:g}{unit}",
                        float(v),
                        sync_dist=True,
                    )
                module.log(
                    f"val/robustness_score_{norm_label(p)}{suffix}",
                    out[norm_label(p)][-1],
                    sync_dist=True,
                )
        self.last_table_family = table_family
        self.last_table = table
        # Files, so that the launching process (spawn) and C-OPT's runner can read them: the
        # synced table (rank 0) and this rank's per-sample radii (`unicr_pl.results`).
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            write_callback_table(root, table)
        write_callback_samples(root, trainer.global_rank, per_sample)
        self._log_curves(trainer, table)

    def _log_curves(self, trainer: L.Trainer, table: dict) -> None:
        if trainer.global_rank != 0 or trainer.logger is None:
            return
        from lightning.pytorch.loggers import WandbLogger

        if isinstance(trainer.logger, WandbLogger):
            import wandb

            rows = [
                [r, v, norm]
                for norm, vals in table.items()
                for r, v in zip(self.radii, vals[:-1], strict=True)
            ]
            tab = wandb.Table(data=rows, columns=["radius", "certified_accuracy", "norm"])
            plot = wandb.plot.line(
                tab,
                "radius",
                "certified_accuracy",
                stroke="norm",
                title="certified accuracy (l_inf radius in 1/255)",
            )
            trainer.logger.experiment.log(
                {"val/certified_accuracy_table": tab, "val/certified_accuracy_curve": plot}
            )
            return
        # Other loggers: a figure (TensorBoard) or a PNG in the run's directory.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from lightning.pytorch.loggers import TensorBoardLogger

        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for norm, vals in table.items():
            ax.plot(self.radii, vals[:-1], "o-", label=norm)
        ax.set(
            xlabel="radius (l_inf: x/255)",
            ylabel="certified accuracy",
            title=f"epoch {trainer.current_epoch}",
        )
        ax.legend()
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_figure(
                "val/certified_accuracy_curve", fig, trainer.global_step
            )
        elif trainer.log_dir:
            fig.savefig(Path(trainer.log_dir) / f"certified_accuracy_e{trainer.current_epoch}.png")
        plt.close(fig)

    def format_table(self, trainer: L.Trainer | None = None) -> str:
        """The last certified-accuracy table as text (rows: norms; columns: radii, R_score).

        With `trainer`, falls back to the file rank 0 wrote (spawned workers' state is lost).
        """
        if not self.last_table and trainer is not None:
            self.last_table = read_callback_table(trainer.default_root_dir)
        if not self.last_table:
            return "no certification has run"
        head = "norm  " + " ".join(f"{r:>6g}" for r in self.radii) + "  R_score  (linf: r/255)"
        lines = [head] + [
            f"{norm:5s} " + " ".join(f"{v:6.3f}" for v in vals[:-1]) + f"  {vals[-1]:.4f}"
            for norm, vals in self.last_table.items()
        ]
        return "\n".join(lines)
