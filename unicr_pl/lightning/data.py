"""`UniCRDataModule`: one DataModule for every dataset, chosen by name.

    digits         scikit-learn's 8x8 digits (ships with scikit-learn: the default, no download)
    mnist, fashion_mnist, cifar10   torchvision layouts under `root` (download only if asked)
    imagenet       ImageFolder layout: root/train/<class>/*, root/val/<class>/* (or the same
                   under root/imagenet)
    synthetic      small Gaussian blobs, for tests
The data root is `root`, else $UNICR_DATA, else ./data. The train/validation split is drawn from
the training set with a fixed seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(10, (1, 8, 8), (0.305,), (0.380,)),
    "mnist": DatasetSpec(10, (1, 28, 28), (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec(10, (1, 28, 28), (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec(10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": DatasetSpec(1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": DatasetSpec(4, (1, 8, 8), (0.0,), (1.0,)),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name; an unknown name errors with the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def data_root(root: str | None) -> str:
    """The data root: `root` if given, else $UNICR_DATA, else ./data."""
    return root or os.environ.get("UNICR_DATA") or "data"


def _digits(seed: int) -> tuple[Dataset, Dataset]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test = perm[: len(y) // 5]  # a fixed 20% test split
    train = perm[len(y) // 5 :]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def _synthetic(seed: int, size: int = 1024) -> tuple[Dataset, Dataset]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (size,), generator=gen)
    x = centres[y] + 0.3 * torch.randn(size, 1, 8, 8, generator=gen)
    cut = size * 4 // 5
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def _torchvision_class(name: str):
    from torchvision import datasets

    return {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": datasets.CIFAR10,
    }[name]


def _torchvision(name: str, root: str, download: bool) -> tuple[Dataset, Dataset]:
    from torchvision import transforms

    cls = _torchvision_class(name)
    train_tf = transforms.ToTensor()
    if name == "cifar10":
        train_tf = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )
    try:
        return (
            cls(root, train=True, download=download, transform=train_tf),
            cls(root, train=False, download=download, transform=transforms.ToTensor()),
        )
    except RuntimeError:
        where = Path(root).absolute()
        where = where / "cifar-10-batches-py" if name == "cifar10" else where / cls.__name__ / "raw"
        raise ValueError(
            f"{name} not found in {where}: download it with --data.download true (into "
            f"--data.root), or point --data.root or $UNICR_DATA at a folder that holds it"
        ) from None


def _imagenet_root(root: str) -> Path:
    """root itself if it holds train/ and val/, else root/imagenet; a clear error otherwise."""
    for base in (Path(root), Path(root) / "imagenet"):
        if (base / "train").is_dir() and (base / "val").is_dir():
            return base
    raise ValueError(
        f"imagenet not found in {Path(root).absolute()}: expected ImageFolder directories "
        f"train/ and val/ (one sub-folder per class) there or in its imagenet/; torchvision "
        f"cannot download ImageNet, point --data.root or $UNICR_DATA at your copy"
    )


def _imagenet(root: str) -> tuple[Dataset, Dataset]:
    from torchvision import datasets, transforms

    root = _imagenet_root(root)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    val_tf = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    return (
        datasets.ImageFolder(Path(root) / "train", train_tf),
        datasets.ImageFolder(Path(root) / "val", val_tf),
    )


class UniCRDataModule(L.LightningDataModule):
    """Train / validation / test loaders of a dataset chosen by name.

    Args:
        dataset: one of DATASETS.
        root: where torchvision / ImageFolder data lives (unused by digits and synthetic);
            None: $UNICR_DATA, else ./data.
        batch_size: loader batch size.
        val_fraction: share of the training set held out for validation (fixed by `seed`).
        seed: seed of the splits.
        download: let torchvision download missing files (needs internet).
        num_workers: loader workers.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        download: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.spec = dataset_spec(dataset)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.root = data_root(root)
        self.train_set = self.val_set = self.test_set = None

    def check(self) -> None:
        """Fails with one line naming the path looked in when the dataset is missing (cheaply:
        ImageNet's folders are only looked at, not scanned)."""
        hp = self.hparams
        if hp.dataset == "imagenet":
            _imagenet_root(self.root)
        elif hp.dataset not in ("digits", "synthetic") and not hp.download:
            _torchvision(hp.dataset, self.root, download=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        if hp.dataset == "digits":
            full, self.test_set = _digits(hp.seed)
        elif hp.dataset == "synthetic":
            full, self.test_set = _synthetic(hp.seed)
        elif hp.dataset == "imagenet":
            full, self.test_set = _imagenet(self.root)
        else:
            full, self.test_set = _torchvision(hp.dataset, self.root, hp.download)
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(hp.seed))
        n_val = max(1, int(len(full) * hp.val_fraction))
        self.val_set = Subset(full, perm[:n_val].tolist())
        self.train_set = Subset(full, perm[n_val:].tolist())

    def _loader(self, data: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
