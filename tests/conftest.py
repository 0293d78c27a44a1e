"""Shared fixtures: small, fast teacher/student pairs on offline data."""

from __future__ import annotations

import pytest
import torch

# Two cores: several threads per process oversubscribe as soon as anything else runs.
torch.set_num_threads(1)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (registered, as its dataclasses need), once."""
    import importlib.util
    import sys
    from pathlib import Path

    key = f"benchmarks_{name}"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def make_module(**overrides):
    from distpro_lightning import DistProModule

    kwargs = dict(
        student="resnet8",
        teacher="resnet14",
        num_classes=10,
        in_channels=1,
        input_shape=[1, 8, 8],
        transforms=["conv_bn", "attn2", "attn3"],
        lr=0.05,
        log_pathways_every_n_steps=0,
    )
    kwargs.update(overrides)
    return DistProModule(**kwargs)


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
