"""``DistillationConfig``: the search space and loss settings of
``DistProMixin.configure_distillation``, validated at construction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from distpro_lightning.functional.losses import get_distance
from distpro_lightning.functional.normalization import check_normalization
from distpro_lightning.pathways.transforms import TRANSFORM_KINDS

__all__ = ["DistillationConfig"]


@dataclass(frozen=True)
class DistillationConfig:
    """The search space and loss settings of `DistProMixin.configure_distillation`
    (see `DistProModule` for the meaning of each field)."""

    student_taps: Sequence[str] | str = "auto"
    teacher_taps: Sequence[str] | str = "auto"
    transforms: Sequence[str] = ("conv_bn", "attn2", "attn3")
    connections: str | Sequence[Sequence[int]] = "all"
    distance: str = "hcl"
    normalization: str = "biased_softmax"
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
        check_normalization(self.normalization)
        get_distance(self.distance)
        for kind in self.transforms:
            if kind not in TRANSFORM_KINDS:
                raise ValueError(
                    f"Unknown transform kind {kind!r}. Choose from: {', '.join(TRANSFORM_KINDS)}."
                )
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}.")
        for role in ("student", "teacher"):
            taps = getattr(self, f"{role}_taps")
            if isinstance(taps, str) and taps != "auto":
                raise ValueError(f"{role}_taps must be 'auto' or a list of names, got {taps!r}.")

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
