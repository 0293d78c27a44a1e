"""The methods of the paper's Table 1 as (module, callbacks) recipes, shared by the demo and
the benchmarks, so every method is configured one way only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.modules.classifier import ClassifierModule
from distpro_lightning.modules.config import DistillationConfig
from distpro_lightning.modules.distpro import DistProModule
from distpro_lightning.modules.student import OptimizerConfig
from distpro_lightning.replay import ProcessScheduleCallback

METHODS: tuple[str, ...] = (
    "student",
    "hinton_kd",
    "fitnet",
    "reviewkd",
    "equal",
    "alpha_T",
    "distpro",
)
LABELS: dict[str, str] = {
    "student": "student alone (CE)",
    "hinton_kd": "Hinton KD (T=4)",
    "fitnet": "FitNet hint (layer2->layer2)",
    "reviewkd": "ReviewKD (ABF + HCL)",
    "equal": "equally weighted",
    "alpha_T": "use alpha_T",
    "distpro": "DistPro (searched process)",
}

#: Hinton KD as a `DistProModule`: the logits pathway alone, at a fixed weight
#: (`DistillationConfig` fields; ``kd_weight`` and ``kd_temperature`` are the method's own).
HINTON_KD: dict[str, Any] = dict(
    connections="none",
    response_kd=True,
    review_kd=False,  # Hinton KD alone, whatever the DistPro search space
    normalization="uniform",
    prune_threshold=None,
)
#: The `ProcessScheduleCallback` mode of each method that weights the DistPro space.
REPLAY_MODES: dict[str, str] = {"equal": "uniform", "alpha_T": "final", "distpro": "process"}


@dataclass(frozen=True)
class RecipeSettings:
    """What every method of one comparison shares: the data's shape, the student's learning
    rate (SGD with momentum 0.9, weight decay 5e-4, cosine schedule), DistPro's pruning
    threshold ``tau`` and its search space: ``paper`` (3 x 3 connections x 3 transforms = 27
    pathways) or ``recommended`` (the 9 ``conv_bn`` pathways with Hinton KD and ReviewKD's
    review as pathways: 11, the space that won the paired comparison, docs/quality.md).
    ``teacher_model``: the teacher's architecture when the teacher file is a bare state
    dict (e.g. ``"resnet20"`` for the committed teachers)."""

    num_classes: int = 10
    in_channels: int = 1
    input_shape: Sequence[int] = (1, 28, 28)
    lr: float = 0.05
    tau: float | None = 0.5
    space: Literal["paper", "recommended"] = "paper"
    teacher_model: str | None = None

    def space_settings(self) -> dict[str, Any]:
        """The `DistillationConfig` fields of the search space."""
        if self.space == "recommended":
            return {"transforms": ["conv_bn"], "response_kd": True, "review_kd": True}
        if self.space != "paper":
            raise ValueError(f"Unknown space {self.space!r}: paper or recommended.")
        return {"transforms": ["conv_bn", "attn2", "attn3"]}

    def module_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every module of the comparison takes."""
        return dict(
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            optimizer=OptimizerConfig(lr=self.lr, scheduler="cosine"),
        )


def distpro_kwargs(
    student: str, teacher: str, settings: RecipeSettings = RecipeSettings(), **overrides: Any
) -> dict[str, Any]:
    """The `DistProModule` arguments of ``settings.space`` (by default the paper's CIFAR
    search space: 3 x 3 connections x 3 transforms = 27 pathways), HCL, biased softmax,
    cosine student schedule. ``overrides`` are `DistillationConfig` fields
    (``transforms=["conv_bn"]``) or module arguments."""
    names = {f.name for f in fields(DistillationConfig)}
    distillation = dict(
        input_shape=list(settings.input_shape),
        **settings.space_settings(),
        connections="all",
        distance="hcl",
        normalization="biased_softmax",
        prune_threshold=settings.tau,
    )
    distillation.update({k: v for k, v in overrides.items() if k in names})
    if distillation["connections"] == "none":  # no feature pathways: no transforms to set
        distillation.pop("transforms", None)
    kwargs: dict[str, Any] = dict(
        student=student,
        teacher=teacher,
        teacher_model=settings.teacher_model,
        distillation=DistillationConfig(**distillation),
        log_pathway_losses=True,
        **settings.module_kwargs(),
    )
    kwargs.update({k: v for k, v in overrides.items() if k not in names})
    return kwargs


def build_method(
    method: str,
    student: str,
    teacher: str,
    process: str | None,
    settings: RecipeSettings = RecipeSettings(),
) -> tuple[Any, list[Any]]:
    """``(LightningModule, callbacks)`` for one method at the same optimizer settings."""
    if method == "student":
        return ClassifierModule(model=student, **settings.module_kwargs()), []
    if method == "hinton_kd":
        return DistProModule(**distpro_kwargs(student, teacher, settings, **HINTON_KD)), []
    if method == "fitnet":
        kw = distpro_kwargs(
            student,
            teacher,
            settings,
            prune_threshold=None,
            connections=[(1, 1)],
            transforms=["conv_bn"],
            response_kd=False,  # the hint alone, whatever the DistPro search space
            review_kd=False,
            distance="mse",
            normalization="uniform",
        )
        return DistProModule(**kw), []
    if method == "reviewkd":
        module = ReviewKDModule(
            student=student,
            teacher=teacher,
            teacher_model=settings.teacher_model,
            input_shape=list(settings.input_shape),
            warmup_epochs=0,
            **settings.module_kwargs(),
        )
        return module, []
    modes = REPLAY_MODES
    if method not in modes:
        raise ValueError(f"Unknown method {method!r}. Choose from: {', '.join(METHODS)}.")
    if process is None and method != "equal":
        raise ValueError(f"Method {method!r} needs a searched process file.")
    module = DistProModule(**distpro_kwargs(student, teacher, settings))
    used = None if method == "equal" else process  # equal weights use no process
    return module, [ProcessScheduleCallback(process=used, mode=modes[method])]
