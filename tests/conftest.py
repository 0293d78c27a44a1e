"""Shared fixtures: small, fast teacher/student pairs on offline data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

# Set once for every test module: two cores, and several threads per process oversubscribe
# as soon as anything else runs (oneDNN's thread barriers can slow a forward a hundredfold).
torch.set_num_threads(1)


def _fashion_source() -> Path | None:
    """A folder holding the four Fashion-MNIST files (Debian's package, else $DATA_DIR)."""
    from distpro_lightning.data.fashion_mnist import (
        DEBIAN_FASHION_MNIST_DIR,
        FASHION_MNIST_FILES,
    )

    for directory in (Path(DEBIAN_FASHION_MNIST_DIR), Path(os.environ.get("DATA_DIR", "data"))):
        for d in (directory, directory / "FashionMNIST" / "raw"):
            if all((d / n).is_file() or (d / f"{n}.gz").is_file() for n in FASHION_MNIST_FILES):
                return d
    return None


FASHION_SOURCE = _fashion_source()
needs_fashion = pytest.mark.skipif(
    FASHION_SOURCE is None,
    reason="Fashion-MNIST files absent: /usr/share/datasets/fashion-mnist missing (install "
    "Debian's dataset-fashion-mnist) and not found under $DATA_DIR (default ./data)",
)


class TinyViT(nn.Module):
    """A user-defined, BatchNorm-free transformer-ish model with token features [B, N, C]."""

    def __init__(self, dim: int, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 2, stride=2)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 2, dim * 2, batch_first=True, dropout=0.0)
            for _ in range(depth)
        )
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t)
        return self.head(t.mean(1))


def make_module(module_class=None, **overrides):
    """The small test module (``module_class``: a DistProModule subclass to build instead).
    ``overrides`` may name fields of the ``distillation`` and ``optimizer`` groups directly
    (``transforms=["conv_bn"]``, ``lr=0.1``): this helper files them into their group."""
    from distpro_lightning import DistillationConfig, DistProModule, OptimizerConfig
    from distpro_lightning.grouping import split_flat
    from distpro_lightning.modules.config import DISTILLATION_FLAT_KEYS
    from distpro_lightning.modules.student import OPTIMIZER_FLAT_KEYS

    groups = {
        "distillation": {"input_shape": [1, 8, 8], "transforms": ["conv_bn", "attn2", "attn3"]},
        "optimizer": {"lr": 0.05},
    }
    kwargs = dict(
        student="resnet8", teacher="resnet14", num_classes=10, in_channels=1,
        log_pathway_losses=False,
    )  # fmt: skip
    keys = {**DISTILLATION_FLAT_KEYS, **OPTIMIZER_FLAT_KEYS}
    keys["name"] = keys.pop("optimizer")  # "optimizer" is the group itself
    overrides, changes = split_flat(overrides, keys)
    for group in groups:
        groups[group].update(changes.get(group, {}), **overrides.pop(group, {}))
    kwargs.update(overrides)
    kwargs.update(distillation=DistillationConfig(**groups["distillation"]))
    kwargs.update(optimizer=OptimizerConfig(**groups["optimizer"]))
    return (module_class or DistProModule)(**kwargs)


def quiet_trainer(**overrides):
    from lightning.pytorch import Trainer

    kwargs = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return Trainer(**kwargs)


@pytest.fixture
def module_factory():
    return make_module


@pytest.fixture
def trainer_factory():
    return quiet_trainer
