"""``ReviewKDModule``: the ReviewKD baseline (Chen et al., CVPR 2021), written for this library.

Student stage features (plus the globally pooled last stage, as in ReviewKD) are fused
deep-to-shallow by attention-based fusion (ABF) modules, and each fused output is compared
with the teacher's feature of the same level by the hierarchical context loss (HCL).
Loss: ``CE + min(epoch / warmup_epochs, 1) * review_weight * sum_levels HCL``.

Other baselines need no class of their own (see the docs' baselines page):
student alone = `ClassifierModule`; Hinton KD = `DistProModule` with
``connections="none", response_kd=True``; FitNet hint = ``connections=[[1, 1]],
transforms=[conv_bn], distance=mse, normalization=uniform``; equally weighted / use alpha_T
/ DistPro = `ProcessScheduleCallback` modes ``uniform`` / ``final`` / ``process``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from distpro_lightning.modules.student import OptimizerConfig, StudentModule
from distpro_lightning.modules.teacher import FrozenTeacher, FrozenTeacherOwner, build_teacher
from distpro_lightning.pathways.review import build_abfs, review_levels, review_loss
from distpro_lightning.pathways.taps import FeatureTaps, auto_taps, probe_shapes


class ReviewKDModule(FrozenTeacherOwner, StudentModule):
    """ReviewKD: knowledge review with ABF fusion and HCL.

    Python:

    ```python
    from distpro_lightning.baselines.reviewkd import ReviewKDModule
    module = ReviewKDModule(student="resnet8", teacher="teacher.ckpt", num_classes=10,
                            in_channels=1, input_shape=[1, 28, 28])
    ```

    YAML:

    ```yaml
    model:
      class_path: distpro_lightning.baselines.reviewkd.ReviewKDModule
      init_args: {student: resnet8, teacher: teacher.ckpt, num_classes: 10, in_channels: 1}
    ```

    Args:
        student: an ``nn.Module`` or a model-registry name.
        teacher: an ``nn.Module``, a registry name or a checkpoint / state-dict path.
        num_classes: number of classes (used when models are built by name).
        in_channels: input channels (used when models are built by name).
        teacher_model: architecture name for a teacher state-dict path.
        student_taps: student stage taps or ``"auto"``: its stages; where it has more stages
            than the teacher, its deepest ones, as many as the teacher's (e.g. the last 3 of
            MobileNetV2's 4 for a 3-stage WRN). Levels are paired shallow to deep; a fused
            feature whose spatial size differs from the teacher's is resized to it (nearest),
            as ReviewKD does.
        teacher_taps: teacher stage taps or ``"auto"`` (likewise trimmed to the student's
            count where the teacher has more stages).
        input_shape: per-sample input shape of the dry run that sizes the ABFs.
        mid_channels: width of the ABF fusion (ReviewKD: 64 on CIFAR, 256 on ImageNet).
        review_weight: weight of the review loss (ReviewKD: 1.0 on CIFAR).
        warmup_epochs: linear ramp of the review weight (ReviewKD: 20 on CIFAR); 0 disables.
        optimizer: the student optimizer and schedule, an `OptimizerConfig` or a dict of its
            fields.
        **flat: version 0.1's flat optimizer keywords, with a ``FutureWarning``.
    """

    divergence_remedy = (
        "Lower review_weight or the learning rate (optimizer.lr), or ramp the review loss in "
        "(warmup_epochs)."
    )

    def __init__(
        self,
        student: nn.Module | str,
        teacher: nn.Module | str,
        num_classes: int = 10,
        in_channels: int = 3,
        teacher_model: str | None = None,
        student_taps: list[str] | str = "auto",
        teacher_taps: list[str] | str = "auto",
        input_shape: list[int] | None = None,
        mid_channels: int = 64,
        review_weight: float = 1.0,
        warmup_epochs: float = 20.0,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008 - frozen
        **flat: Any,
    ) -> None:
        for name, value in (("review_weight", review_weight), ("warmup_epochs", warmup_epochs)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"ReviewKDModule: {name} must be a finite number >= 0, got {value!r} "
                    f"(ReviewKD's CIFAR settings: review_weight=1.0, warmup_epochs=20; "
                    "warmup_epochs=0 disables the ramp)."
                )
        super().__init__(num_classes=num_classes, optimizer=optimizer, **flat)
        from distpro_lightning.models import create

        if isinstance(student, str):
            student = create(student, num_classes, in_channels)
        self.student = student
        teacher = build_teacher(teacher, num_classes, in_channels, teacher_model)
        example = torch.zeros(2, *(input_shape or [in_channels, 32, 32]))
        s_taps, t_taps = _level_taps(student, teacher, student_taps, teacher_taps, example)
        s_shapes, _ = probe_shapes(student, s_taps, example, "student")
        t_shapes, _ = probe_shapes(teacher, t_taps, example, "teacher")
        self._s_taps = FeatureTaps(student, s_taps, "student")
        self.frozen_teacher = FrozenTeacher(teacher, t_taps)
        self.frozen_teacher.attach(self)
        # levels shallow -> deep, plus the pooled last stage; ABFs are applied deep -> shallow
        self.abfs = build_abfs([s[0] for s in s_shapes], [t[0] for t in t_shapes], mid_channels)
        self.review_weight = review_weight
        self.warmup_epochs = warmup_epochs

    def teacher_levels(self, x: Tensor) -> list[Tensor]:
        """The teacher's levels of ``x`` (eval mode, no grad)."""
        return review_levels(self.frozen_teacher(x).features)

    def review_loss(self, x: Tensor, teacher: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(student_logits, sum over levels of HCL(fused student, teacher))``."""
        teacher = self.teacher_levels(x) if teacher is None else teacher
        with self._s_taps.capture() as store:
            logits = self.student(x)
        feats = review_levels(self._s_taps.ordered(store))
        loss = review_loss(self.abfs, feats, teacher)
        return logits, loss

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = self.split_batch(batch)
        logits, review = self.review_loss(x)
        warm = self.warmup_epochs
        ramp = 1.0 if warm <= 0 else min(self.current_epoch / warm, 1.0)
        task = self.task_loss(logits, y)
        loss = task + ramp * self.review_weight * review
        self.log_train_loss(loss)
        self.watch_task_loss(task)
        self.log("train/review_loss", review)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters()) + list(self.abfs.parameters())


def _level_taps(
    student: nn.Module,
    teacher: nn.Module,
    student_taps: list[str] | str,
    teacher_taps: list[str] | str,
    example: Tensor,
) -> tuple[list[str], list[str]]:
    """Student and teacher taps paired level by level; ``"auto"`` on the side with more
    stages keeps its deepest ones, one per other-side level."""
    s_taps = auto_taps(student, example) if student_taps == "auto" else list(student_taps)
    t_taps = auto_taps(teacher, example) if teacher_taps == "auto" else list(teacher_taps)
    if student_taps == "auto" and len(s_taps) > len(t_taps):
        s_taps = s_taps[len(s_taps) - len(t_taps) :]
    if teacher_taps == "auto" and len(t_taps) > len(s_taps):
        t_taps = t_taps[len(t_taps) - len(s_taps) :]
    if len(s_taps) != len(t_taps):
        raise ValueError(
            f"ReviewKD pairs taps level by level: got {len(s_taps)} student taps {s_taps} "
            f"and {len(t_taps)} teacher taps {t_taps}. Give lists of the same length."
        )
    return s_taps, t_taps
