"""``ClassifierModule``: plain supervised training (teachers, the "student alone" baseline)."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from . import optim


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training of any classifier, with top-1/top-5 from torchmetrics.

    Python::

        from distpro_lightning import ClassifierModule
        module = ClassifierModule(model="resnet20", num_classes=10, in_channels=1, lr=0.1,
                                  milestones=[3, 4])

    YAML (``distpro fit --config examples/fashion_mnist/teacher.yaml``)::

        model:
          class_path: distpro_lightning.ClassifierModule
          init_args: {model: resnet20, num_classes: 10, in_channels: 1, lr: 0.1}

    Args:
        model: a registry name (``distpro_lightning.models.available_models()``) or an
            ``nn.Module``. When a name is given it is stored in the hyper-parameters, so
            :func:`~distpro_lightning.load_teacher` can rebuild it from the checkpoint.
        num_classes: number of classes (used when ``model`` is a name).
        in_channels: input channels (used when ``model`` is a name).
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        nesterov: Nesterov momentum (SGD).
        scheduler: per-epoch schedule: ``step`` (multi-step), ``cosine`` or ``none``.
        milestones: epochs at which ``step`` multiplies the lr by ``gamma``.
        gamma: the ``step`` schedule's factor.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        model: nn.Module | str = "resnet20",
        num_classes: int = 10,
        in_channels: int = 3,
        optimizer: Literal["sgd", "adam", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        scheduler: Literal["step", "cosine", "none"] = "step",
        milestones: list[int] = [],  # noqa: B006 - jsonargparse default
        gamma: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        from .models import create

        if isinstance(model, str):
            self.save_hyperparameters()
            self.model = create(model, num_classes=num_classes, in_channels=in_channels)
        else:
            self.save_hyperparameters(ignore=["model"])
            self.model = model
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        top_k = min(5, num_classes)
        self.val_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        top1, top5 = (
            (self.val_top1, self.val_top5) if stage == "val" else (self.test_top1, self.test_top5)
        )
        top1(logits, y)
        top5(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/top1", top1, prog_bar=True)
        self.log(f"{stage}/top5", top5)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        return optim.configure(self, self.parameters())
