"""``DistillationConfig``: the search space and loss settings of
``DistProMixin.configure_distillation``, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from distpro_lightning.functional.losses import DistanceName, get_distance
from distpro_lightning.functional.normalization import NormalizationName, check_normalization
from distpro_lightning.grouping import check_field_types, check_ranges, positive, say_unused
from distpro_lightning.pathways.transforms import TRANSFORM_KINDS

__all__ = ["DISTILLATION_FLAT_KEYS", "DistillationConfig"]


@dataclass(frozen=True)
class DistillationConfig:
    """The search space and loss settings of a distillation: `DistProModule`'s
    ``distillation`` group (YAML: ``distillation: {transforms: [conv_bn], kd_weight: 1.0}``
    under the module's ``init_args``) and `DistProMixin.configure_distillation`'s ``config``.

    Args:
        student_taps: dotted module names of the student features, or ``"auto"`` (the
            down-sampling stage outputs; timm models: their ``feature_info`` stages).
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
        review_kd: add ReviewKD's knowledge review (ABF fusion of the student taps, HCL
            against the teacher taps, plus the pooled last stage) as one pathway
            ``review->review:abf``, so that the search can weight what ReviewKD does.
        kd_temperature: the temperature of ``response_kd``.
        input_shape: per-sample input shape for the dry run that sizes the heads
            (`DistProModule` default: ``[in_channels, 32, 32]``).
        save_teacher: keep the teacher's weights in checkpoints.
        fused_heads: run the heads of one connection together (same losses and gradients,
            fewer kernels); ``False``: one head at a time; ``None``: fused unless
            ``compile_heads`` (`PathwayHeads`). Even fused, a connection with fewer active
            heads than ``pathways.heads.MIN_FUSED`` for its device (CUDA: 3; else 2) runs
            them one by one, which measured faster there.
        compile_heads: ``torch.compile`` the pathway heads (state dict unchanged; each new
            pruning pattern compiles again).
        student_attribute: the attribute that holds the student network in a mixin module
            (default ``student``).
    """

    student_taps: Sequence[str] | str = "auto"
    teacher_taps: Sequence[str] | str = "auto"
    transforms: Sequence[str] = ("conv_bn", "attn2", "attn3")
    connections: Literal["all", "lower_to_higher", "none"] | Sequence[Sequence[int]] = "all"
    distance: DistanceName = "hcl"
    normalization: NormalizationName = "biased_softmax"
    normalization_bias: float = 1.0
    kd_weight: float = 1.0
    scale_by_num_pathways: bool = True
    prune_threshold: float | None = None
    response_kd: bool = False
    review_kd: bool = False
    kd_temperature: float = 4.0
    input_shape: Sequence[int] | None = None
    save_teacher: bool = False
    fused_heads: bool | None = None
    compile_heads: bool = False
    student_attribute: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        check_normalization(self.normalization)
        get_distance(self.distance)
        if isinstance(self.transforms, str):
            raise TypeError(
                f"distillation.transforms takes a list of transform kinds, got the string "
                f"{self.transforms!r}: write transforms=[{self.transforms!r}] (in YAML: "
                f"transforms: [{self.transforms}]). Kinds: {', '.join(TRANSFORM_KINDS)}."
            )
        for kind in self.transforms:
            if kind not in TRANSFORM_KINDS:
                raise ValueError(
                    f"Unknown transform kind {kind!r}. Choose from: {', '.join(TRANSFORM_KINDS)}."
                )
        self._check_ranges()
        for role in ("student", "teacher"):
            taps = getattr(self, f"{role}_taps")
            if isinstance(taps, str) and taps != "auto":
                raise ValueError(f"{role}_taps must be 'auto' or a list of names, got {taps!r}.")

    def _check_ranges(self) -> None:
        """Refuse values out of range by their key; say which given values have no effect."""
        check_ranges(
            "distillation",
            self,
            {
                "kd_weight": (positive, "a finite number > 0 (a student alone: ClassifierModule)"),
                "kd_temperature": (positive, "a finite number > 0"),
                "prune_threshold": (
                    lambda t: t is None or (isinstance(t, int | float) and math.isfinite(t)),
                    "None or a finite number (the paper: 0.5)",
                ),
                "input_shape": (
                    lambda s: s is None or all(isinstance(d, int) and d > 0 for d in s),
                    "None or positive sizes, e.g. [3, 32, 32]",
                ),
            },
        )
        say_unused(
            "distillation",
            self,
            {
                "normalization_bias": None
                if self.normalization == "biased_softmax"
                else f"normalization={self.normalization!r} (only biased_softmax has a bias)",
                "kd_temperature": None
                if self.response_kd
                else "response_kd=False (the KD pathway's temperature)",
                **self._unused_without_feature_pathways(),
            },
        )

    def _unused_without_feature_pathways(self) -> dict[str, str | None]:
        """With ``connections='none'`` there are no feature pathways: their transforms and
        distance have no effect (the review pathway uses HCL), nor do the taps unless the
        review pathway reads them."""
        if self.connections != "none":
            return {}
        why = "connections='none' (no feature pathways"
        cases: dict[str, str | None] = {
            "transforms": why + ")" if self.transforms else None,  # [] says "none" too
            "distance": why + "; the review pathway uses HCL)",
        }
        if not self.review_kd:
            taps = why + " and review_kd=False: no feature is tapped)"
            cases |= {"student_taps": taps, "teacher_taps": taps}
        return cases

    @classmethod
    def with_options(cls, base: DistillationConfig | None, options: Mapping[str, Any]) -> Any:
        """``base`` (default: the defaults) with ``options`` replacing fields."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(
                f"configure_distillation() got unknown options {unknown}; valid: {sorted(names)}."
            )
        return replace(base or cls(), **options)


#: The flat keywords of version 0.1's ``DistProModule``: ``name -> ("distillation", field)``.
DISTILLATION_FLAT_KEYS: dict[str, tuple[str, str]] = {
    f.name: ("distillation", f.name) for f in fields(DistillationConfig)
}
