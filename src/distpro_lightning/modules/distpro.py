"""``DistProModule``: a student distilled from a frozen teacher through weighted pathways,
a complete classification LightningModule built on `DistProMixin`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from distpro_lightning.modules.config import DISTILLATION_FLAT_KEYS
from distpro_lightning.modules.contract import TeacherOutput
from distpro_lightning.modules.mixin import DistillationConfig, DistProMixin
from distpro_lightning.modules.student import OPTIMIZER_FLAT_KEYS, OptimizerConfig, StudentModule
from distpro_lightning.modules.teacher import build_teacher

__all__ = [
    "DistProMixin",
    "DistProModule",
    "DistillationConfig",
    "OptimizerConfig",
    "TeacherOutput",
    "check_ddp_pruning",
]


def check_ddp_pruning(trainer: Any, module: DistProMixin) -> None:
    """Pruned pathways leave their heads without gradients in a step, which plain DDP rejects:
    refuse that combination early, with the fix."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = getattr(trainer, "strategy", None)
    if module.prune_threshold is None or not isinstance(strategy, DDPStrategy):
        return
    kwargs = getattr(strategy, "_ddp_kwargs", {}) or {}
    if not kwargs.get("find_unused_parameters", False):
        raise RuntimeError(
            f"prune_threshold={module.prune_threshold} (distillation.prune_threshold) skips pathway "
            "heads, which DDP reports as "
            "unused parameters. Use strategy='ddp_find_unused_parameters_true' (or "
            "DDPStrategy(find_unused_parameters=True)), or set prune_threshold=None."
        )


def check_teacher_file(checkpoint_path: Any, teacher_model: Any = None) -> None:
    """Refuse to rebuild a module from ``checkpoint_path`` whose hyperparameters name a
    teacher file that no longer exists, with the two ways on: ``teacher=None`` (with the
    architecture, ``teacher_model``, when the run gave none) or ``teacher=`` a new path."""
    import os
    from pathlib import Path

    from distpro_lightning.modules.checkpoints import load_state_file

    if not isinstance(checkpoint_path, str | os.PathLike) or not Path(checkpoint_path).is_file():
        return  # Lightning's own loading says what is wrong with it
    hp = load_state_file(checkpoint_path).get("hyper_parameters") or {}
    teacher = hp.get("teacher")
    if not isinstance(teacher, str) or not Path(teacher).suffix or Path(teacher).exists():
        return  # a module, a registry name, or a file that is there
    arch = teacher_model or hp.get("teacher_model")
    needs = "" if arch else ", teacher_model='resnet20'  # the teacher's architecture"
    raise FileNotFoundError(
        f"The teacher file {teacher!r} this checkpoint was trained with does not exist (looked "
        f"for {str(Path(teacher).absolute())!r}); the checkpoint holds no teacher weights. To "
        "test, predict or export the student without it: DistProModule.load_from_checkpoint("
        f"ckpt, teacher=None{needs}); to distil again, pass the teacher's new path: "
        "load_from_checkpoint(ckpt, teacher='path/to/teacher.ckpt')."
    )


class DistProModule(DistProMixin, StudentModule):
    """A student distilled from a frozen teacher through weighted pathways (DistPro).

    Python:

    ```python
    from distpro_lightning import DistillationConfig, DistProModule, ProcessSearchCallback
    module = DistProModule(student="resnet8", teacher="teacher.ckpt", num_classes=10,
                           in_channels=1,
                           distillation=DistillationConfig(transforms=["conv_bn", "attn2"]),
                           optimizer={"lr": 0.05, "scheduler": "cosine"})
    trainer = Trainer(callbacks=[ProcessSearchCallback()])
    ```

    YAML (``distpro fit --config``):

    ```yaml
    model:
      class_path: distpro_lightning.DistProModule
      init_args:
        student: resnet8
        teacher: runs/teacher/teacher.ckpt
        num_classes: 10
        in_channels: 1
        distillation:
          transforms: [conv_bn, attn2, attn3]
          connections: all
          distance: hcl
          normalization: biased_softmax
        optimizer: {name: sgd, lr: 0.05, scheduler: cosine}
    ```

    Args:
        student: an ``nn.Module`` or a model-registry name (``distpro_lightning.models``).
        teacher: an ``nn.Module``, a registry name (untrained!), or the path of a
            `ClassifierModule` checkpoint / a state-dict file (see ``teacher_model``).
            ``None``: no teacher, for inference (``load_from_checkpoint(ckpt, teacher=None)``
            when the teacher file is gone): ``teacher_model`` is built untrained to size the
            heads, and fitting is refused.
        num_classes: number of classes (used when models are built by name).
        in_channels: input channels (used when models are built by name).
        teacher_model: the architecture of a ``teacher`` checkpoint that does not name one
            (a state dict, or a checkpoint of your own LightningModule): a registry name or
            an (untrained) module, in YAML ``{class_path: my_pkg.MyNet, init_args: {...}}``;
            its weights are loaded from ``teacher``.
        distillation: the pathways and the loss, a `DistillationConfig` or a dict of its
            fields (taps, transforms, connections, distance, normalisation, ``kd_weight``,
            pruning, ``response_kd``/``review_kd``, heads).
        optimizer: the student optimizer and schedule, an `OptimizerConfig` or a dict of its
            fields.
        log_pathway_losses: log every pathway's loss (``pathway_loss/<pathway>``, one series
            per pathway) at the Trainer's ``log_every_n_steps``; the weights are the search
            callback's ``alpha_weight/<pathway>``.
        **flat: version 0.1's flat keywords (``transforms=...``, ``lr=...``), applied to
            their group with a ``FutureWarning`` (Python only; YAML takes the nested keys).
    """

    applies_reused_gradient = True
    divergence_remedy = (
        "Lower the distillation weight (distillation.kd_weight) or the learning rate "
        "(optimizer.lr), or distil with ReviewKD and its warm-up (ReviewKDModule(warmup_epochs=...))."
    )

    def __init__(
        self,
        student: nn.Module | str,
        teacher: nn.Module | str | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        teacher_model: nn.Module | str | None = None,
        distillation: DistillationConfig = DistillationConfig(),  # noqa: B008 - frozen
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008 - frozen
        log_pathway_losses: bool = False,
        **flat: Any,
    ) -> None:
        given = {"distillation": (DistillationConfig, distillation)}
        given["optimizer"] = (OptimizerConfig, optimizer)
        groups = self.regroup(given, flat, {**DISTILLATION_FLAT_KEYS, **OPTIMIZER_FLAT_KEYS})
        distillation, optimizer = groups["distillation"], groups["optimizer"]
        flat.clear()  # applied: the hyper-parameters hold the groups
        super().__init__(num_classes=num_classes, optimizer=optimizer)
        from distpro_lightning.models import create

        if isinstance(student, str):
            student = create(student, num_classes=num_classes, in_channels=in_channels)
        self.student = student
        if distillation.input_shape is None:
            distillation = replace(distillation, input_shape=[in_channels, 32, 32])
        self.teacher_is_placeholder = teacher is None
        self.configure_distillation(
            self._teacher(teacher, num_classes, in_channels, teacher_model), distillation
        )
        self.num_classes = num_classes
        self.log_pathway_losses = log_pathway_losses

    @staticmethod
    def _teacher(
        teacher: nn.Module | str | None,
        num_classes: int,
        in_channels: int,
        teacher_model: nn.Module | str | None,
    ) -> nn.Module:
        """The teacher; ``None``: its architecture (``teacher_model``) untrained, which sizes
        the pathway heads of a module loaded for inference when the teacher file is gone."""
        if teacher is not None:
            return build_teacher(teacher, num_classes, in_channels, teacher_model)
        if teacher_model is None:
            raise ValueError(
                "No teacher: give teacher= (the teacher checkpoint, a module or a registry "
                "name) to distil. teacher=None is for inference without the teacher file and "
                "then needs teacher_model, the teacher's architecture, to size the pathway "
                "heads: e.g. DistProModule.load_from_checkpoint(ckpt, teacher=None, "
                "teacher_model='resnet20')."
            )
        rank_zero_info(
            "DistProModule(teacher=None): the teacher's architecture is built untrained; "
            "test, validate, predict and export the student, but do not fit with it."
        )
        if isinstance(teacher_model, nn.Module):
            return teacher_model
        from distpro_lightning.models import create

        return create(teacher_model, num_classes=num_classes, in_channels=in_channels)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any
    ) -> DistProModule:
        """Lightning's ``load_from_checkpoint``; when the teacher file the checkpoint's run
        used is gone (and no ``teacher=`` is given), one `FileNotFoundError` that says so
        and names ``teacher=None`` (inference without the teacher) or a new path, instead
        of the teacher's error inside jsonargparse's list of union subtypes."""
        if "teacher" not in kwargs:
            check_teacher_file(checkpoint_path, kwargs.get("teacher_model"))
        return super().load_from_checkpoint(checkpoint_path, map_location, **kwargs)

    def on_fit_start(self) -> None:
        if self.teacher_is_placeholder:
            raise RuntimeError(
                "This DistProModule was built with teacher=None (an untrained placeholder, for "
                "inference): fitting would distil from random weights. Build it with the "
                "teacher checkpoint: teacher='path/to/teacher.ckpt'."
            )
        check_ddp_pruning(self.trainer, self)
        super().on_fit_start()  # DistProMixin: the pathway summary and the heads' size

    def forward(self, x: Tensor) -> Tensor:
        """The student's logits (inference)."""
        return self.student(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        reused = self.take_reused_gradient()
        if reused is not None:
            # ProcessSearchCallback(reuse_training_gradient=True): the virtual step's gradient
            # is the update; the surrogate's gradient with respect to theta is exactly it.
            self.log_train_loss(reused.loss)
            if reused.task_loss is not None:
                self.log("train/task_loss", reused.task_loss)
                self.watch_task_loss(reused.task_loss)
            return reused.surrogate_loss()
        loss, task, losses, _ = self.training_loss(batch)
        self.log_train_loss(loss)
        self.log("train/task_loss", task)
        self.watch_task_loss(task)
        if self.log_pathway_losses:
            for name, value in zip(self.pathway_names, losses.detach()):
                self.log(f"pathway_loss/{name}", value)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters()) + list(self.distill_heads.parameters())
