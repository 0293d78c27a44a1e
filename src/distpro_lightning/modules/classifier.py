"""``ClassifierModule``: plain supervised training (teachers, the "student alone" baseline)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from distpro_lightning.modules.student import OptimizerConfig, StudentModule


class ClassifierModule(StudentModule):
    """Cross-entropy training of any classifier, with top-1/top-5 from torchmetrics.

    Python:

    ```python
    from distpro_lightning import ClassifierModule
    module = ClassifierModule(model="resnet20", num_classes=10, in_channels=1,
                              optimizer={"lr": 0.1, "milestones": [3, 4]})
    ```

    YAML (``distpro fit --config examples/fashion_mnist/teacher.yaml``):

    ```yaml
    model:
      class_path: distpro_lightning.ClassifierModule
      init_args:
        model: resnet20
        num_classes: 10
        in_channels: 1
        optimizer: {name: sgd, lr: 0.1, scheduler: cosine}
    ```

    Args:
        model: a registry name (``distpro_lightning.models.available_models()``) or an
            ``nn.Module``. When a name is given it is stored in the hyper-parameters, so
            `load_teacher` can rebuild it from the checkpoint.
        num_classes: number of classes (used when ``model`` is a name).
        in_channels: input channels (used when ``model`` is a name).
        optimizer: the optimizer and schedule, an `OptimizerConfig` or a dict of its fields
            (``lr`` 0.1 by default here).
        label_smoothing: cross-entropy label smoothing.
        **flat: version 0.1's flat optimizer keywords (``lr=0.1``), with a
            ``FutureWarning``.
    """

    def __init__(
        self,
        model: nn.Module | str = "resnet20",
        num_classes: int = 10,
        in_channels: int = 3,
        optimizer: OptimizerConfig = OptimizerConfig(lr=0.1),  # noqa: B008 - frozen
        label_smoothing: float = 0.0,
        **flat: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, optimizer=optimizer, **flat)
        from distpro_lightning.models import create

        if isinstance(model, str):
            model = create(model, num_classes=num_classes, in_channels=in_channels)
        self.model = model
        self.label_smoothing = label_smoothing
        top_k = min(5, num_classes)
        self.val_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")

    @property
    def student(self) -> nn.Module:
        """The trained network (``model``)."""
        return self.model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = self.split_batch(batch)
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.val_top5(self._eval_step(batch, self.val_top1, "val"), self.split_batch(batch)[1])
        self.log("val/top5", self.val_top5)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.test_top5(self._eval_step(batch, self.test_top1, "test"), self.split_batch(batch)[1])
        self.log("test/top5", self.test_top5)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())
