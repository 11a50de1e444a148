"""`UniCRModule`: a classifier trained under noise augmentation (Cohen et al.'s recipe).

Fresh noise is drawn for every batch on the batch's device and added in *input* space, before
the normalisation layer, exactly as the smoothed classifier will see it at certification.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from unicr_pl.backbones import create_backbone
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
    ) -> None:
        super().__init__()
        if num_classes is None or input_shape is None:
            raise ValueError("UniCRModule needs num_classes and input_shape (train.py fills them)")
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

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, "train")
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
