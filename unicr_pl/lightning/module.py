"""`UniCRModule`: a classifier trained under noise (noise augmentation, consistency, MACER or
SmoothAdv: `--method`, the losses in `unicr_pl.losses`).

Fresh noise is drawn for every batch on the batch's device and added in *input* space, before
the normalisation layer, exactly as the smoothed classifier will see it at certification.
The methods that draw m copies per input draw them on each rank for that rank's own inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from unicr_pl.backbones import create_backbone
from unicr_pl.losses import (
    RadiusFn,
    SmoothAdv,
    macer_radius,
    method_config,
    method_loss,
    repeat_copies,
    smoothadv_attack,
)
from unicr_pl.noises import Noise, create_noise


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are buffers, so they follow the device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class UniCRModule(L.LightningModule):
    """Base classifier + smoothing noise + normalisation.

    Args:
        backbone: backbone name (see `unicr_pl.backbones`) or an `nn.Module` (Python use).
        num_classes, input_shape, mean, std: filled from the dataset by train.py when omitted.
        noise, sigma, alpha, beta: the training noise (`unicr_pl.noises.create_noise`).
        lr, momentum, weight_decay, lr_step_size, lr_gamma: SGD with a step schedule (Cohen).
        method: training method, one of `unicr_pl.losses.METHODS` (noise_aug, consistency,
            macer, smoothadv); its paper defaults are in configs/method/.
        m: noisy copies per input (None: the method's default).
        method_args: the method's other arguments, overriding its defaults (e.g. lbd, eta).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "lenet",
        num_classes: int | None = None,
        input_shape: list[int] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        noise: str = "gaussian",
        sigma: float | None = 0.25,
        alpha: float | None = None,
        beta: float | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_step_size: int = 30,
        lr_gamma: float = 0.1,
        method: str = "noise_aug",
        m: int | None = None,
        method_args: dict | None = None,
    ) -> None:
        super().__init__()
        if num_classes is None or input_shape is None:
            raise ValueError("UniCRModule needs num_classes and input_shape (train.py fills them)")
        self.method = method_config(method, m, method_args)  # bad input: one line, first
        self.save_hyperparameters(ignore=["backbone"] if isinstance(backbone, nn.Module) else None)
        if isinstance(backbone, nn.Module):
            self.backbone = backbone
        else:
            self.backbone = create_backbone(backbone, num_classes, input_shape)
        # sigma = 0 means no noise (a standard classifier, e.g. for I-OPT's Table 8).
        self.noise: Noise | None = None
        if sigma != 0:
            self.noise = create_noise(
                noise, sigma=None if alpha is not None else sigma, alpha=alpha, beta=beta
            )
        if self.noise is None and self.method.name != "noise_aug":
            raise ValueError(f"--method {self.method.name} needs noise: sigma is 0")
        self.radius_fn: RadiusFn | None = None
        if self.method.name == "macer":  # the curve is built (or read) before training
            dim = int(torch.tensor(input_shape).prod())
            self.radius_fn = macer_radius(self.noise, dim, self.method.radius)
        channels = input_shape[0]
        self.normalize = Normalize(mean or [0.0] * channels, std or [1.0] * channels)
        self.acc = nn.ModuleDict(
            {
                f"{stage}_{kind}": MulticlassAccuracy(num_classes, average="micro")
                for stage in ("train", "val", "test")
                for kind in ("clean", "noisy")
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the base classifier on clean inputs: [B, C, H, W] -> [B, classes]."""
        return self.backbone(self.normalize(x))

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.noise is None else x + self.noise.sample(x)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(self.add_noise(x))
        loss = nn.functional.cross_entropy(logits, y)
        self.acc[f"{stage}_noisy"](logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train")
        self.log(f"{stage}/acc_noisy", self.acc[f"{stage}_noisy"], prog_bar=True)
        if stage != "train":  # the clean pass costs a forward; skip it while training
            self.acc[f"{stage}_clean"](self(x), y)
            self.log(f"{stage}/acc_clean", self.acc[f"{stage}_clean"], prog_bar=True)
        return loss

    def on_fit_start(self) -> None:
        # Lightning seeds every DDP rank alike (reset_seed), so each rank would draw the same
        # noise for its own inputs: offset the seed by the rank (one device: unchanged).
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def _train_step(self, batch) -> torch.Tensor:
        """The one training step of every method: m noisy copies of each input (for SmoothAdv,
        of its adversarial input under the same draws), then the method's loss on them."""
        x, y = batch
        cfg, epoch = self.method, self.current_epoch
        copies = repeat_copies(x, cfg.m)  # x itself for m = 1: noise_aug draws as it always did
        noise = None if self.noise is None else self.noise.sample(copies)
        noisy = copies if noise is None else copies + noise
        if isinstance(cfg, SmoothAdv):
            was_training = self.training
            self.eval()  # the attack sees the model as certification will (batch norm)
            with torch.enable_grad():
                x_adv = smoothadv_attack(self, x, y, noise, cfg.eps_at(epoch), cfg.steps)
            self.train(was_training)
            noisy = repeat_copies(x_adv, cfg.m) + noise
        logits = self(noisy)
        loss, terms = method_loss(cfg, logits.view(x.shape[0], cfg.m, -1), y, epoch, self.radius_fn)
        self.acc["train_noisy"](logits, y if cfg.m == 1 else y.repeat_interleave(cfg.m))
        self.log("train/loss", loss, prog_bar=True, sync_dist=False)
        self.log("train/acc_noisy", self.acc["train_noisy"], prog_bar=True)
        for key, value in terms.items():
            self.log(f"train/{key}", value)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._train_step(batch)
        # A diverged run stops here, not at the final certification; all ranks decide together
        # so that no DDP rank waits forever for one that stopped.
        diverged = self.trainer.strategy.reduce_boolean_decision(
            not bool(torch.isfinite(loss)), all=False
        )
        if diverged:
            raise ValueError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} (batch {batch_idx}): the run diverged; lower --model.lr"
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_size, gamma=hp.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": sched}
