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
