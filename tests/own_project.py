"""A Lightning user's own project (their CNN, module and data module) with the mixin,
shared by the bring-your-own tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from distpro_lightning import (
    DistProMixin,
)
from distpro_lightning.models import create


class NetModule(DistProMixin, LightningModule):
    """A user's module whose network is ``self.net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = create("resnet8", num_classes=10, in_channels=1)
        teacher = create("resnet14", num_classes=10, in_channels=1)
        self.configure_distillation(
            teacher, student_attribute="net", transforms=["conv_bn"], input_shape=[1, 8, 8]
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, kd = self.distill(x)
        return F.cross_entropy(logits, y) + kd

    def configure_optimizers(self):
        params = list(self.net.parameters()) + list(self.distill_heads.parameters())
        return torch.optim.SGD(params, lr=0.05)


class PlainData(LightningDataModule):
    """A user's data module: no search_val_dataloader, a validation split of its own."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,))

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:64], self.y[:64]), batch_size=16)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[64:], self.y[64:]), batch_size=16)


class SmallCNN(torch.nn.Module):
    """A user's own network: three conv stages and a linear head (no registry name)."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, stride: int) -> torch.nn.Sequential:
            return torch.nn.Sequential(
                torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                torch.nn.BatchNorm2d(c_out),
                torch.nn.ReLU(),
            )

        self.layer1 = stage(1, width, 1)
        self.layer2 = stage(width, 2 * width, 2)
        self.layer3 = stage(2 * width, 4 * width, 2)
        self.fc = torch.nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


class OwnData(LightningDataModule):
    """A user's own data module for ``distpro compare``: class-dependent 8 x 8 images, a
    ``seed`` that draws the training subset, validation and test splits of its own and a
    ``search_val_dataloader`` (the held-out batches of a search)."""

    def __init__(self, seed: int = 0, train_size: int = 64, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)  # the data set; ``seed`` draws the subset
        y = torch.arange(320) % 10
        x = torch.randn(320, 1, 8, 8, generator=g) + (y.float() / 5 - 1).view(-1, 1, 1, 1)
        pool = torch.randperm(192, generator=torch.Generator().manual_seed(seed))
        self.train = TensorDataset(x[pool[:train_size]], y[pool[:train_size]])
        self.search_val = TensorDataset(x[pool[train_size:]], y[pool[train_size:]])
        self.val = TensorDataset(x[192:256], y[192:256])
        self.test = TensorDataset(x[256:], y[256:])
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def search_val_dataloader(self):
        return DataLoader(self.search_val, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=32)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=32)
