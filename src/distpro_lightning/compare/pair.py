"""The pair a comparison distils: the user's teacher, student, search space and data, as
factories, so that every run starts from fresh objects.

``model()`` returns a `DistProModule` of the user's pair (what ``distpro fit``'s ``model:``
section builds): its ``student`` (fresh weights), its teacher, its distillation config (the
search space that ``equal``, ``fixed`` and the DistPro methods use) and its optimizer
settings; every method is built from them. ``data(seed, search)`` returns the user's data
module for a run of ``seed`` (``search``: the data module of a search, which needs held-out
batches: ``search_val_dataloader()``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import LightningDataModule, seed_everything
from torch import nn

from distpro_lightning.modules.distpro import DistProModule


@dataclass(frozen=True)
class Pair:
    """The user's pair, data and trainer settings.

    Args:
        model: returns a fresh `DistProModule` of the pair. It is called under
            ``seed_everything(seed)``, so its student's initial weights are those of
            the seed, the same for every method.
        data: ``data(seed, search)`` returns a fresh data module; it must serve
            ``train_dataloader``, ``val_dataloader`` (the choice of grid points) and
            ``test_dataloader`` (the reported top-1), and for a search
            ``search_val_dataloader``.
        trainer: ``Trainer`` arguments of every run (``max_epochs``, ``accelerator``, ...);
            the comparison sets its own loggers, callbacks and checkpointing.
        source: how a fresh process rebuilds this pair (``jobs > 1``): an importable
            ``"module:function"`` and its JSON arguments; ``None``: only ``jobs=1``.
        description: what the pair was built from (a results file is resumed only under
            the same).
    """

    model: Callable[[], DistProModule]
    data: Callable[[int, bool], LightningDataModule]
    trainer: Mapping[str, Any] = field(default_factory=dict)
    source: tuple[str, Sequence[Any]] | None = None
    description: Mapping[str, Any] = field(default_factory=dict)

    def template(self, seed: int) -> DistProModule:
        """The pair's module built under ``seed_everything(seed)``: the seed's student."""
        seed_everything(seed, workers=True, verbose=False)
        module = self.model()
        if not isinstance(module, DistProModule):
            raise TypeError(
                f"compare: the pair's model is a {type(module).__name__}; give a "
                "distpro_lightning.DistProModule (model: class_path: "
                "distpro_lightning.DistProModule) with the pair's student, teacher and "
                "distillation settings: every method is built from them."
            )
        return module

    @property
    def max_epochs(self) -> int:
        epochs = self.trainer.get("max_epochs")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                f"compare: trainer.max_epochs is {epochs!r}; give the epochs of every run "
                "(e.g. trainer: {max_epochs: 30}): the searches and ReviewKD's warm-up are "
                "fractions of them."
            )
        return epochs


def teacher_of(module: DistProModule) -> nn.Module:
    """The teacher network of the pair's module (frozen, eval mode)."""
    return module.frozen_teacher.model


def rebuild(source: tuple[str, Sequence[Any]]) -> Pair:
    """The pair a ``source`` (``"module:function"``, arguments) builds in a fresh process."""
    target, args = source
    module_name, _, name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), name)
    pair = factory(*args)
    if not isinstance(pair, Pair):
        raise TypeError(f"compare: {target} returned a {type(pair).__name__}, not a Pair.")
    return pair
