"""``DistProMixin``: the DistPro search space (taps, pathway heads, alpha logits, losses) for
any LightningModule that has a ``student``; ``DistillationConfig``: its settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from distpro_lightning.functional.losses import get_distance, hinton_kd_loss
from distpro_lightning.functional.normalization import normalize
from distpro_lightning.modules.checkpoints import CheckpointError
from distpro_lightning.modules.config import DistillationConfig
from distpro_lightning.modules.contract import (
    Objective,
    ParameterGroups,
    TeacherOutput,
    split_inputs_targets,
)
from distpro_lightning.modules.step_context import StepContext, StepContextReader
from distpro_lightning.modules.teacher import FrozenTeacher, FrozenTeacherOwner, check_not_shared
from distpro_lightning.pathways.heads import (
    KD_PATHWAY_NAME,
    PathwayHeads,
    build_specs,
    resolve_connections,
)
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME, ReviewPathway
from distpro_lightning.pathways.taps import (
    INPUT_ERRORS,
    NOT_INPUT_ERRORS,
    FeatureTaps,
    example_input,
    input_error,
    probe_shapes,
    resolve_taps,
    unwrap_model,
)
from distpro_lightning.process.core import DistillationProcess

log = logging.getLogger(__name__)


class DistProMixin(StepContextReader, FrozenTeacherOwner):
    """The DistPro machinery for any LightningModule that has a ``student``.

    Adopt it in an existing module with three additions:

    ```python
    class MyModule(DistProMixin, LightningModule):
        def __init__(self, student, teacher):
            super().__init__()
            self.student = student
            self.configure_distillation(teacher, student_taps="auto")   # (1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits, kd_loss = self.distill(x)                           # (2)
            return self.task_loss(logits, y) + kd_loss                  # (3)
    ```

    ``distill(x)`` runs the (frozen) teacher and the student with its feature taps and
    returns the student logits and ``sum_p w_p * delta_p``; ``ProcessSearchCallback`` and
    ``ProcessScheduleCallback`` drive ``alpha_logits``. Override `task_loss` (and
    `split_batch`) for tasks other than classification.

    The search hands each training step a `StepContext` (`step_context`): ``distill`` and
    ``training_loss`` take its shared training forward (or its teacher outputs). To use
    ``reuse_training_gradient=True`` too, return ``self.take_reused_gradient().surrogate_loss()``
    from ``training_step`` when there is one, and set ``applies_reused_gradient = True``.

    The teacher stays in eval mode (`FrozenTeacherOwner`): ``self.train()`` leaves it so, the
    model summary lists it as ``eval``, and Lightning does not warn about it.
    """

    teacher: nn.Module
    alpha_logits: Tensor
    #: ``training_step`` applies `take_reused_gradient` when there is one.
    applies_reused_gradient: bool = False
    #: The attribute that holds the student network (``student_attribute="net"`` in
    #: `configure_distillation`, or this class attribute); `student` reads it,
    #: so the weights are stored once, under that name.
    student_attribute: str = "student"

    @property
    def student(self) -> nn.Module:
        """The student network: the submodule named by `student_attribute`."""
        name = self.student_attribute
        modules = self.__dict__.get("_modules", {})
        if name == "student":
            if "student" not in modules:
                raise AttributeError("self.student is not set")
            return modules["student"]
        return getattr(self, name)

    # ------------------------------------------------------------------ construction
    def configure_distillation(
        self, teacher: nn.Module, config: DistillationConfig | None = None, **options: Any
    ) -> None:
        """Set up taps, pathway heads and alpha logits. The student (the submodule named by
        `student_attribute`, ``self.student`` by default) must already be set.

        Args:
            teacher: the frozen teacher network.
            config: the settings (default: `DistillationConfig`'s defaults).
            **options: fields of `DistillationConfig` that replace ``config``'s, e.g.
                ``transforms=["conv_bn"], input_shape=[1, 28, 28]``.
        """
        cfg = DistillationConfig.with_options(config, options)
        if cfg.student_attribute is not None:
            self.student_attribute = cfg.student_attribute
        if not isinstance(getattr(self, "student", None), nn.Module):
            raise AttributeError(
                f"Set self.{self.student_attribute} (an nn.Module) before "
                "configure_distillation(), or name the attribute that holds your network with "
                "student_attribute='...'."
            )
        student = unwrap_model(self.student)
        example_array = getattr(self, "example_input_array", None)
        example = example_input(student, cfg.input_shape, example_array)
        self.student_tap_names = resolve_taps(student, cfg.student_taps, example, "student")
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}.")
        check_not_shared(self.student, teacher)
        self.teacher_tap_names = resolve_taps(teacher, cfg.teacher_taps, example, "teacher")
        self.frozen_teacher = FrozenTeacher(teacher, self.teacher_tap_names, cfg.save_teacher)
        self.frozen_teacher.attach(self)
        self._build_pathways(cfg, student, example)
        self.transform_kinds = list(cfg.transforms)
        self.response_kd = cfg.response_kd
        self.review_kd = cfg.review_kd
        self.kd_temperature = float(cfg.kd_temperature)
        self.normalization = cfg.normalization
        self.normalization_bias = float(cfg.normalization_bias)
        self.kd_weight = float(cfg.kd_weight)
        self.scale_by_num_pathways = bool(cfg.scale_by_num_pathways)
        self.prune_threshold = cfg.prune_threshold
        self.save_teacher = cfg.save_teacher
        self.distillation_config = cfg
        self.register_buffer("alpha_logits", torch.ones(len(self.pathway_names)))
        self.step_context: StepContext | None = None

    def _build_pathways(self, cfg: DistillationConfig, student: nn.Module, example: Tensor) -> None:
        s_shapes, s_out = probe_shapes(student, self.student_tap_names, example, "student")
        t_shapes, t_out = probe_shapes(self.teacher, self.teacher_tap_names, example, "teacher")
        if cfg.response_kd and s_out.shape[1:] != t_out.shape[1:]:
            raise ValueError(
                f"response_kd needs student and teacher outputs of the same shape; got "
                f"{tuple(s_out.shape[1:])} and {tuple(t_out.shape[1:])}."
            )
        pairs = resolve_connections(cfg.connections, len(t_shapes), len(s_shapes))
        if not pairs and not cfg.response_kd and not cfg.review_kd:
            raise ValueError(
                "No pathways: the connection list is empty. Give at least one (teacher, student) "
                "pair, or enable response_kd for logits-only distillation."
            )
        specs = build_specs(
            self.teacher_tap_names, self.student_tap_names, pairs, list(cfg.transforms)
        )
        review = ReviewPathway(s_shapes, t_shapes) if cfg.review_kd else None
        self.distill_heads = PathwayHeads(
            specs, s_shapes, t_shapes, get_distance(cfg.distance),
            fused=cfg.fused_heads, compiled=cfg.compile_heads, review=review,
        )  # fmt: skip
        self._student_taps = FeatureTaps(student, self.student_tap_names, "student")
        self.student_tap_shapes, self.teacher_tap_shapes = s_shapes, t_shapes
        self.student_output_shape = tuple(s_out.shape[1:])
        self.teacher_output_shape = tuple(t_out.shape[1:])
        self.pathway_specs = specs
        self.pathway_names = (
            [s.name for s in specs]
            + ([REVIEW_PATHWAY_NAME] if cfg.review_kd else [])
            + ([KD_PATHWAY_NAME] if cfg.response_kd else [])
        )

    def distillation_group(self) -> dict[str, Any]:
        """``{"distillation": distillation_hparams()}`` for the loggers' hyperparameters
        when the module's own hyperparameters lack that group (a mixin module); ``{}`` for
        a `DistProModule`, whose ``distillation`` argument is saved (and logged) already."""
        own = getattr(self, "hparams", None) or {}
        return (
            {}
            if isinstance(own.get("distillation"), dict)
            else {"distillation": self.distillation_hparams()}
        )

    def distillation_hparams(self) -> dict[str, Any]:
        """The distillation settings as plain values, for the loggers' hyperparameters (the
        search and replay callbacks log them under ``distillation``), with the pathway count."""
        from dataclasses import asdict

        values = {
            k: list(v) if isinstance(v, tuple | list) else v
            for k, v in asdict(self.distillation_config).items()
            if k != "student_attribute"
        }
        return {**values, "num_pathways": self.num_pathways}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before the weights load (a resume or ``load_from_checkpoint``): refuse a
        checkpoint whose pathways differ from this module's with one message naming the
        settings that make them, instead of a screenful of missing ``state_dict`` keys (a
        `CheckpointError`, which ``distpro fit`` prints as one line)."""
        state = checkpoint.get("state_dict") or {}
        theirs = {k for k in state if k.startswith("distill_heads.")}
        ours = {f"distill_heads.{k}" for k in self.distill_heads.state_dict()}
        alpha = state.get("alpha_logits")
        count = None if alpha is None else int(alpha.numel())
        if (theirs and theirs != ours) or (count is not None and count != self.num_pathways):
            hp = checkpoint.get("hyper_parameters") or {}
            if isinstance(hp.get("distillation"), dict):  # DistProModule's group
                hp = hp["distillation"]
            keys = ("transforms", "connections", "student_taps", "teacher_taps", "response_kd")
            written = ", ".join(f"{k}={hp[k]!r}" for k in (*keys, "review_kd") if k in hp)
            raise CheckpointError(
                f"This checkpoint was trained with other pathways than this module: "
                f"{count if count is not None else '?'} pathway logits there, "
                f"{self.num_pathways} here; {len(theirs - ours)} of its head tensors are not "
                f"in this module and {len(ours - theirs)} of this module's are not in it. "
                "Build the module with the same transforms, connections, taps, response_kd "
                "and review_kd (distillation.*) as the run that wrote it"
                + (f" (it was written with {written})." if written else ".")
            )
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]

    def on_fit_start(self) -> None:
        """At fit start, like Lightning's model summary: the pathway table (when the Trainer
        prints a model summary) and a warning when the pathway heads dwarf the student
        (`announce_pathways`); no warning about the frozen teacher's eval mode
        (`FrozenTeacherOwner`). A module that overrides ``on_fit_start`` calls
        ``super().on_fit_start()`` to keep them."""
        from distpro_lightning.modules.summary import announce_pathways

        announce_pathways(self.trainer, self)
        super().on_fit_start()  # type: ignore[misc]

    def pathway_summary(self) -> str:
        """The pathway table (`pathway_summary`): shapes,
        transform, head parameters and pruned state per pathway, totals beside the
        student's size."""
        from distpro_lightning.modules.summary import pathway_summary

        return pathway_summary(self)

    def export_student(self, path: str, overwrite: bool = False) -> Path:
        """Write the student alone (weights and, when known, its registry name, classes and
        channels) to ``path`` atomically; `load_student` reads it back without the teacher,
        the heads or this module. An existing file is refused unless ``overwrite=True``."""
        from distpro_lightning.modules.student_io import export_student

        return export_student(self, path, overwrite)

    # ------------------------------------------------------------------ weights
    @property
    def num_pathways(self) -> int:
        return len(self.pathway_names)

    @property
    def weight_scale(self) -> float:
        """Global multiplier of the normalised weights: ``kd_weight`` (x ``P`` if scaled)."""
        return self.kd_weight * (self.num_pathways if self.scale_by_num_pathways else 1.0)

    def kd_weight_for_scale(self, scale: float) -> float:
        """The ``kd_weight`` at which `weight_scale` is ``scale`` (a process file's
        ``normalization["scale"]``): the setting that replays a process searched at another
        total weight at its own scale."""
        return scale / (self.num_pathways if self.scale_by_num_pathways else 1.0)

    def alpha_weights(self, logits: Tensor | None = None) -> Tensor:
        """The multipliers of the pathway losses, ``w(a~) * scale``; differentiable in logits."""
        if logits is None:
            logits = self.alpha_logits
        return normalize(logits, self.normalization, self.normalization_bias) * self.weight_scale

    def active_pathways(self, logits: Tensor | None = None) -> list[bool] | None:
        """Pathways to compute: those with logit ``> prune_threshold`` (``None``: all)."""
        if self.prune_threshold is None:
            return None
        if logits is None:
            logits = self.alpha_logits
        return (logits > self.prune_threshold).tolist()

    def new_process(self, provenance: Mapping[str, Any]) -> DistillationProcess:
        """An empty process for this module's pathways and normalisation; with the KD
        pathway, its ``kd_temperature`` is recorded in the provenance (a replay compares)."""
        if KD_PATHWAY_NAME in self.pathway_names:
            provenance = {**provenance, "kd_temperature": self.kd_temperature}
        return DistillationProcess(
            self.pathway_names,
            {
                "name": self.normalization,
                "bias": self.normalization_bias,
                "scale": self.weight_scale,
            },
            teacher_taps=self.teacher_tap_names,
            student_taps=self.student_tap_names,
            transform_kinds=self.transform_kinds,
            prune_threshold=self.prune_threshold,
            provenance=provenance,
        )

    # ------------------------------------------------------------------ forward passes
    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` of a batch ``(x, y, ...)``; override for other layouts."""
        return split_inputs_targets(batch, type(self).__name__)

    def task_loss(self, student_outputs: Tensor, targets: Tensor) -> Tensor:
        """The task loss of the student (cross-entropy); also the search's validation loss."""
        return F.cross_entropy(student_outputs, targets)

    def teacher_outputs(self, x: Tensor) -> TeacherOutput:
        """The frozen teacher's logits and tapped features (eval mode, no grad)."""
        return self.frozen_teacher(x)

    def search_parameters(self) -> ParameterGroups:
        """theta: the trainable parameters of the student and of the pathway heads."""
        student = unwrap_model(self.student).named_parameters()
        heads = self.distill_heads.named_parameters()
        return ParameterGroups(
            {n: p for n, p in student if p.requires_grad},
            {n: p for n, p in heads if p.requires_grad},
        )

    def student_forward(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """The student's output, optionally with substituted parameters (by name)."""
        student = unwrap_model(self.student)
        try:
            if params is None:
                return student(x)
            return functional_call(student, dict(params), (x,), strict=False)
        except NOT_INPUT_ERRORS:
            raise
        except INPUT_ERRORS as exc:
            raise input_error("student", student, x, exc, dry_run=False) from exc

    def pathway_forward(
        self,
        x: Tensor,
        teacher: TeacherOutput,
        active: Sequence[bool] | None = None,
        params: ParameterGroups | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Student logits and the pathway-loss vector ``[P]`` against ``teacher``.

        ``params`` substitutes theta; inactive (pruned) pathways are not computed and are 0.
        """
        with self._student_taps.capture() as store:
            logits = self.student_forward(x, None if params is None else params.student)
        feats = self._student_taps.ordered(store)
        n_heads = self.distill_heads.num_losses
        feat_active = None if active is None else list(active)[:n_heads]
        inputs = (feats, teacher.features, feat_active)
        if params is None:
            losses = self.distill_heads(*inputs)
        else:
            losses = functional_call(self.distill_heads, params.heads, inputs, strict=False)
        if self.response_kd:
            if active is None or active[-1]:
                kd = hinton_kd_loss(logits.float(), teacher.logits.float(), self.kd_temperature)
            else:
                kd = logits.new_zeros((), dtype=torch.float32)
            losses = torch.cat([losses, kd.reshape(1)])
        return logits, losses

    @staticmethod
    def weighted_sum(weights: Tensor, pathway_losses: Tensor) -> Tensor:
        """The distillation term ``sum_p w_p * delta_p``."""
        return (weights * pathway_losses).sum()

    def objective(
        self,
        x: Tensor,
        y: Any,
        teacher: TeacherOutput,
        weights: Tensor,
        active: Sequence[bool] | None = None,
    ) -> Objective:
        """The training objective ``task(S(x), y) + sum_p w_p delta_p``, the one definition
        the training step and the search's virtual step share."""
        logits, losses = self.pathway_forward(x, teacher, active)
        task = self.task_loss(logits, y)
        return Objective(task + self.weighted_sum(weights, losses), task, losses, logits)

    def distillation_losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(student_logits [B, C], pathway_losses [P])``; the teacher runs under no_grad.
        During a search, this step's training forward is reused when it was shared."""
        shared = self.take_shared_forward(x)
        if shared is not None:
            return shared.objective.logits, shared.objective.pathway_losses
        return self.pathway_forward(x, self._teacher_for(x), self.active_pathways())

    def distill(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(student_logits, sum_p w_p * delta_p)`` with the current alpha (pruning applied)."""
        logits, losses = self.distillation_losses(x)
        return logits, self.weighted_sum(self.alpha_weights().detach(), losses)

    def training_loss(self, batch: Any) -> Objective:
        """``(loss, task_loss, pathway_losses, student_logits)`` of the DistPro objective."""
        x, y = self.split_batch(batch)
        weights = self.alpha_weights().detach()
        shared = self.take_shared_forward(x)
        if shared is not None:  # the search's training pass: same theta, same inputs
            losses, logits = shared.objective.pathway_losses, shared.objective.logits
            # the task loss anew from the shared logits: the targets and any state the loss
            # reads (label smoothing, a relabelled y) are this step's, not the search's
            task = self.task_loss(logits, y)
            return Objective(task + self.weighted_sum(weights, losses), task, losses, logits)
        return self.objective(x, y, self._teacher_for(x), weights, self.active_pathways())
