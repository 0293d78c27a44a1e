"""``DistProModule`` and ``DistProMixin``: the DistPro search space as a LightningModule.

The mixin holds the machinery (taps, pathway heads, alpha logits, losses) and can be adopted
by a user's own LightningModule; :class:`DistProModule` is a complete classification module
built on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torchmetrics.classification import MulticlassAccuracy

from . import optim
from .checkpoints import load_teacher
from .losses import get_distance, hinton_kd_loss
from .normalization import check_normalization, normalize
from .pathways import KD_PATHWAY_NAME, PathwayHeads, build_specs, resolve_connections
from .taps import FeatureTaps, auto_taps, probe_shapes, unwrap_model
from .transforms import TRANSFORM_KINDS

log = logging.getLogger(__name__)


@dataclass
class TeacherOutput:
    """The teacher's logits and tapped features for one batch (computed without grad)."""

    logits: Tensor
    features: list[Tensor]


def _example_input(
    model: nn.Module, input_shape: Sequence[int] | None, example: Tensor | None
) -> Tensor:
    if example is not None:
        return example[:2] if example.dim() > 0 and example.shape[0] > 2 else example
    if input_shape is not None:
        return torch.zeros(2, *[int(s) for s in input_shape])
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError(
            "Cannot infer the input shape of a model without Conv2d layers: pass input_shape "
            "(per-sample, e.g. [3, 224, 224]) or set example_input_array."
        )
    return torch.zeros(2, first_conv.in_channels, 32, 32)


class DistProMixin:
    """The DistPro machinery for any LightningModule that has a ``student``.

    Adopt it in an existing module with three additions::

        class MyModule(DistProMixin, LightningModule):
            def __init__(self, student, teacher):
                super().__init__()
                self.student = student
                self.configure_distillation(teacher, student_taps="auto")   # (1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                logits, kd_loss = self.distill(x)                           # (2)
                return self.task_loss(logits, y) + kd_loss                  # (3)

    ``distill(x)`` runs the (frozen) teacher and the student with its feature taps and
    returns the student logits and ``sum_p w_p * delta_p``; ``ProcessSearchCallback`` and
    ``ProcessScheduleCallback`` drive ``alpha_logits``. Override :meth:`task_loss` (and
    :meth:`split_batch`) for tasks other than classification.
    """

    student: nn.Module
    teacher: nn.Module
    alpha_logits: Tensor

    # ------------------------------------------------------------------ construction
    def configure_distillation(
        self,
        teacher: nn.Module,
        student_taps: Sequence[str] | str = "auto",
        teacher_taps: Sequence[str] | str = "auto",
        transforms: Sequence[str] = ("conv_bn", "attn2", "attn3"),
        connections: str | Sequence[Sequence[int]] = "all",
        distance: str = "hcl",
        normalization: str = "biased_softmax",
        normalization_bias: float = 1.0,
        kd_weight: float = 1.0,
        scale_by_num_pathways: bool = True,
        prune_threshold: float | None = None,
        response_kd: bool = False,
        kd_temperature: float = 4.0,
        input_shape: Sequence[int] | None = None,
        save_teacher: bool = False,
        fused_heads: bool | None = None,
        compile_heads: bool = False,
    ) -> None:
        """Set up taps, pathway heads and alpha logits (see :class:`DistProModule` for the
        meaning of each argument). ``self.student`` must already be set."""
        if not isinstance(getattr(self, "student", None), nn.Module):
            raise AttributeError("Set self.student (an nn.Module) before configure_distillation().")
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}.")
        check_normalization(normalization)
        self._distance = get_distance(distance)
        for kind in transforms:
            if kind not in TRANSFORM_KINDS:
                raise ValueError(
                    f"Unknown transform kind {kind!r}. Choose from: {', '.join(TRANSFORM_KINDS)}."
                )
        if kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {kd_temperature}.")

        self.teacher = teacher
        teacher.requires_grad_(False)
        student = unwrap_model(self.student)
        example = _example_input(student, input_shape, getattr(self, "example_input_array", None))
        if isinstance(student_taps, str):
            if student_taps != "auto":
                raise ValueError(
                    f"student_taps must be 'auto' or a list of names, got {student_taps!r}."
                )
            student_taps = auto_taps(student, example)
            log.info("DistPro: automatic student taps %s", student_taps)
        if isinstance(teacher_taps, str):
            if teacher_taps != "auto":
                raise ValueError(
                    f"teacher_taps must be 'auto' or a list of names, got {teacher_taps!r}."
                )
            teacher_taps = auto_taps(teacher, example)
            log.info("DistPro: automatic teacher taps %s", teacher_taps)
        self.student_tap_names = list(student_taps)
        self.teacher_tap_names = list(teacher_taps)
        s_shapes, s_out = probe_shapes(student, self.student_tap_names, example, "student")
        t_shapes, t_out = probe_shapes(teacher, self.teacher_tap_names, example, "teacher")
        if response_kd and s_out.shape[1:] != t_out.shape[1:]:
            raise ValueError(
                f"response_kd needs student and teacher outputs of the same shape; got "
                f"{tuple(s_out.shape[1:])} and {tuple(t_out.shape[1:])}."
            )
        pairs = resolve_connections(connections, len(t_shapes), len(s_shapes))
        if not pairs and not response_kd:
            raise ValueError(
                "No pathways: the connection list is empty. Give at least one (teacher, student) "
                "pair, or enable response_kd for logits-only distillation."
            )
        specs = build_specs(self.teacher_tap_names, self.student_tap_names, pairs, list(transforms))
        self.distill_heads = PathwayHeads(
            specs, s_shapes, t_shapes, self._distance, fused=fused_heads, compiled=compile_heads
        )
        self._student_taps = FeatureTaps(student, self.student_tap_names, "student")
        self._teacher_taps = FeatureTaps(teacher, self.teacher_tap_names, "teacher")
        self.transform_kinds = list(transforms)
        self.pathway_specs = specs
        self.pathway_names = [s.name for s in specs] + ([KD_PATHWAY_NAME] if response_kd else [])
        self.response_kd = response_kd
        self.kd_temperature = float(kd_temperature)
        self.normalization = normalization
        self.normalization_bias = float(normalization_bias)
        self.kd_weight = float(kd_weight)
        self.scale_by_num_pathways = bool(scale_by_num_pathways)
        self.prune_threshold = prune_threshold
        self.save_teacher = save_teacher
        self.register_buffer("alpha_logits", torch.ones(len(self.pathway_names)))
        self._teacher_cache: tuple[Tensor, TeacherOutput] | None = None
        self._register_state_dict_hook(_drop_teacher_state)
        self.register_load_state_dict_pre_hook(_fill_teacher_state)

    # ------------------------------------------------------------------ weights
    @property
    def num_pathways(self) -> int:
        return len(self.pathway_names)

    @property
    def weight_scale(self) -> float:
        """Global multiplier of the normalised weights: ``kd_weight`` (x ``P`` if scaled)."""
        return self.kd_weight * (self.num_pathways if self.scale_by_num_pathways else 1.0)

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

    # ------------------------------------------------------------------ forward passes
    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` of a batch; override for other batch layouts."""
        return batch[0], batch[1]

    def task_loss(self, student_outputs: Tensor, targets: Tensor) -> Tensor:
        """The task loss of the student (cross-entropy); also the search's validation loss."""
        return F.cross_entropy(student_outputs, targets)

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> TeacherOutput:
        """The frozen teacher's logits and tapped features (eval mode, no grad).

        The teacher runs in eval mode; its mode flags are restored afterwards, so Lightning's
        train/eval bookkeeping never sees a module left in eval mode.
        """
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with self._teacher_taps.capture() as store:
                logits = self.teacher(x)
        finally:
            if was_training:
                self.teacher.train()
        return TeacherOutput(logits, self._teacher_taps.ordered(store))

    def cache_teacher_outputs(self, x: Tensor, out: TeacherOutput) -> None:
        """Let the next :meth:`distill` call on this very ``x`` reuse ``out``."""
        self._teacher_cache = (x, out)

    def _teacher_for(self, x: Tensor) -> TeacherOutput:
        cache, self._teacher_cache = self._teacher_cache, None
        if cache is not None and cache[0] is x:
            return cache[1]
        return self.teacher_outputs(x)

    def search_parameters(self) -> dict[str, nn.Parameter]:
        """theta: every trainable parameter of the student and of the pathway heads."""
        params = {
            f"student.{n}": p
            for n, p in unwrap_model(self.student).named_parameters()
            if p.requires_grad
        }
        params.update(
            {f"heads.{n}": p for n, p in self.distill_heads.named_parameters() if p.requires_grad}
        )
        return params

    def student_forward(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """The student's output (optionally with substituted parameters)."""
        student = unwrap_model(self.student)
        if params is None:
            return student(x)
        sp = {k[8:]: v for k, v in params.items() if k.startswith("student.")}
        return functional_call(student, sp, (x,), strict=False)

    def pathway_forward(
        self,
        x: Tensor,
        teacher: TeacherOutput,
        active: Sequence[bool] | None = None,
        params: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Student logits and the pathway-loss vector ``[P]`` against ``teacher``.

        ``params`` substitutes theta (keys as in :meth:`search_parameters`); inactive
        (pruned) pathways are not computed and are 0.
        """
        with self._student_taps.capture() as store:
            logits = self.student_forward(x, params)
        feats = self._student_taps.ordered(store)
        n_feat = len(self.pathway_specs)
        feat_active = None if active is None else list(active)[:n_feat]
        if params is None:
            losses = self.distill_heads(feats, teacher.features, feat_active)
        else:
            hp = {k[6:]: v for k, v in params.items() if k.startswith("heads.")}
            losses = functional_call(
                self.distill_heads, hp, (feats, teacher.features, feat_active), strict=False
            )
        if self.response_kd:
            if active is None or active[-1]:
                kd = hinton_kd_loss(logits.float(), teacher.logits.float(), self.kd_temperature)
            else:
                kd = logits.new_zeros((), dtype=torch.float32)
            losses = torch.cat([losses, kd.reshape(1)])
        return logits, losses

    def distillation_losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(student_logits [B, C], pathway_losses [P])``; the teacher runs under no_grad."""
        return self.pathway_forward(x, self._teacher_for(x), self.active_pathways())

    def distill(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(student_logits, sum_p w_p * delta_p)`` with the current alpha (pruning applied)."""
        logits, losses = self.distillation_losses(x)
        return logits, (self.alpha_weights().detach() * losses).sum()

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(loss, task_loss, pathway_losses, student_logits)`` of the DistPro objective."""
        x, y = self.split_batch(batch)
        logits, losses = self.distillation_losses(x)
        task = self.task_loss(logits, y)
        return task + (self.alpha_weights().detach() * losses).sum(), task, losses, logits


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
            f"prune_threshold={module.prune_threshold} skips pathway heads, which DDP reports as "
            "unused parameters. Use strategy='ddp_find_unused_parameters_true' (or "
            "DDPStrategy(find_unused_parameters=True)), or set prune_threshold=None."
        )


def _drop_teacher_state(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any
) -> None:
    if getattr(module, "save_teacher", False):
        return
    for key in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[key]


def _fill_teacher_state(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    teacher = getattr(module, "teacher", None)
    if teacher is None:
        return
    for key, value in teacher.state_dict().items():
        state_dict.setdefault(f"{prefix}teacher.{key}", value)


class DistProModule(DistProMixin, optim.StudentEvalMixin, pl.LightningModule):
    """A student distilled from a frozen teacher through weighted pathways (DistPro).

    Python::

        from distpro_lightning import DistProModule
        module = DistProModule(student="resnet8", teacher="teacher.ckpt", num_classes=10,
                               in_channels=1, transforms=["conv_bn", "attn2", "attn3"])
        trainer = Trainer(callbacks=[ProcessSearchCallback()])

    YAML (``distpro fit --config``)::

        model:
          class_path: distpro_lightning.DistProModule
          init_args:
            student: resnet8
            teacher: runs/teacher/teacher.ckpt
            num_classes: 10
            in_channels: 1
            connections: all
            transforms: [conv_bn, attn2, attn3]
            distance: hcl
            normalization: biased_softmax

    Args:
        student: an ``nn.Module`` or a model-registry name (``distpro_lightning.models``).
        teacher: an ``nn.Module``, a registry name (untrained!), or the path of a
            :class:`ClassifierModule` checkpoint / a state-dict file (see ``teacher_model``).
        num_classes: number of classes (used when models are built by name).
        in_channels: input channels (used when models are built by name).
        teacher_model: architecture name for a ``teacher`` state-dict path that does not
            name its architecture.
        student_taps: dotted module names of the student features, or ``"auto"`` (the
            down-sampling stage outputs).
        teacher_taps: the same for the teacher.
        transforms: the transform kinds, one pathway per kind and connection
            (``conv_bn``, ``attn2``, ``attn3``; ``token`` for transformer tokens).
        connections: ``"all"``, ``"lower_to_higher"``, ``"none"`` (no feature pathways; with
            ``response_kd`` this is plain Hinton KD) or a list of ``[teacher_idx,
            student_idx]`` pairs.
        distance: ``"hcl"``, ``"mse"`` or ``"l1"``.
        normalization: ``biased_softmax`` (paper), ``softmax``, ``l1_plus_one``, ``l1``,
            ``sigmoid`` or ``uniform`` (equally weighted).
        normalization_bias: the ``g`` of ``biased_softmax``.
        kd_weight: global weight of the distillation term.
        scale_by_num_pathways: multiply the weights by ``P`` (the official release's
            ``P * kd_weight`` scale), so uniform weights give each pathway ``kd_weight``.
        prune_threshold: tau; pathways whose logit is ``<= tau`` are not computed.
        response_kd: add Hinton KD on the logits as pathway ``logits->logits:kd``.
        kd_temperature: its temperature.
        input_shape: per-sample input shape for the dry run that sizes the heads
            (default: ``[in_channels, 32, 32]``).
        save_teacher: keep the teacher's weights in checkpoints.
        fused_heads: run the heads of one connection together (same losses and gradients,
            fewer kernels); ``False``: one head at a time; ``None``: fused unless
            ``compile_heads`` (:class:`~distpro_lightning.pathways.PathwayHeads`).
        compile_heads: ``torch.compile`` the pathway heads (state dict unchanged; each new
            pruning pattern compiles anew).
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        nesterov: Nesterov momentum (SGD).
        scheduler: per-epoch schedule: ``step`` (multi-step), ``cosine`` or ``none``.
        milestones: epochs at which ``step`` multiplies the lr by ``gamma``.
        gamma: the ``step`` schedule's factor.
        log_pathways_every_n_steps: how often per-pathway losses and weights are logged.
    """

    def __init__(
        self,
        student: nn.Module | str,
        teacher: nn.Module | str,
        num_classes: int = 10,
        in_channels: int = 3,
        teacher_model: str | None = None,
        student_taps: list[str] | str = "auto",
        teacher_taps: list[str] | str = "auto",
        transforms: list[str] = ["conv_bn", "attn2", "attn3"],  # noqa: B006 - jsonargparse default
        connections: Literal["all", "lower_to_higher", "none"] | list[tuple[int, int]] = "all",
        distance: Literal["hcl", "mse", "l1"] = "hcl",
        normalization: Literal[
            "biased_softmax", "softmax", "l1_plus_one", "l1", "sigmoid", "uniform"
        ] = "biased_softmax",
        normalization_bias: float = 1.0,
        kd_weight: float = 1.0,
        scale_by_num_pathways: bool = True,
        prune_threshold: float | None = None,
        response_kd: bool = False,
        kd_temperature: float = 4.0,
        input_shape: list[int] | None = None,
        save_teacher: bool = False,
        fused_heads: bool | None = None,
        compile_heads: bool = False,
        optimizer: Literal["sgd", "adam", "adamw"] = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        scheduler: Literal["step", "cosine", "none"] = "step",
        milestones: list[int] = [],  # noqa: B006 - jsonargparse default
        gamma: float = 0.1,
        log_pathways_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        from .models import create

        self.save_hyperparameters(ignore=["student", "teacher"])
        self.student = (
            create(student, num_classes=num_classes, in_channels=in_channels)
            if isinstance(student, str)
            else student
        )
        if isinstance(teacher, str):
            if os.path.isfile(teacher):
                teacher = load_teacher(teacher, teacher_model, num_classes, in_channels)
            else:
                log.warning("DistPro: teacher %r built by name is untrained.", teacher)
                teacher = create(teacher, num_classes=num_classes, in_channels=in_channels)
        self.configure_distillation(
            teacher,
            student_taps=student_taps,
            teacher_taps=teacher_taps,
            transforms=transforms,
            connections=connections,
            distance=distance,
            normalization=normalization,
            normalization_bias=normalization_bias,
            kd_weight=kd_weight,
            scale_by_num_pathways=scale_by_num_pathways,
            prune_threshold=prune_threshold,
            response_kd=response_kd,
            kd_temperature=kd_temperature,
            input_shape=input_shape if input_shape is not None else [in_channels, 32, 32],
            save_teacher=save_teacher,
            fused_heads=fused_heads,
            compile_heads=compile_heads,
        )
        self.num_classes = num_classes
        self._reused_gradient: tuple[Tensor, dict[str, Tensor], Tensor] | None = None
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def on_fit_start(self) -> None:
        check_ddp_pruning(self.trainer, self)

    def forward(self, x: Tensor) -> Tensor:
        """The student's logits (inference)."""
        return self.student(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        reused, self._reused_gradient = self._reused_gradient, None
        if reused is not None and reused[0] is self.split_batch(batch)[0]:
            # ProcessSearchCallback(reuse_training_gradient=True): the virtual step's gradient
            # is the update; this surrogate's gradient w.r.t. theta is exactly that gradient.
            self._teacher_cache = None
            theta = self.search_parameters()
            self.log("train/loss", reused[2], prog_bar=True)
            return sum((theta[k] * g.detach()).sum() for k, g in reused[1].items())
        loss, task, losses, _ = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/task_loss", task)
        n = self.hparams.log_pathways_every_n_steps
        if n > 0 and self.global_step % n == 0:
            weights = self.alpha_weights().detach()
            for name, value, weight in zip(self.pathway_names, losses.detach(), weights):
                self.log(f"pathway_loss/{name}", value)
                self.log(f"pathway_weight/{name}", weight)
        return loss

    def configure_optimizers(self) -> Any:
        return optim.configure(
            self, list(self.student.parameters()) + list(self.distill_heads.parameters())
        )
