"""ReviewKD's knowledge review (Chen et al., CVPR 2021) as a reusable block: attention-based
fusion (ABF) of the student's stage features, deep to shallow, each fused level compared with
the teacher's feature of the same level by the hierarchical context loss.

Used by the ReviewKD baseline (`baselines.ReviewKDModule`) and, as one pathway named
``review->review:abf``, by DistPro's search space (``review_kd=True``), so that a search can
give weight to what ReviewKD does."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distpro_lightning.functional.losses import hcl_loss

REVIEW_PATHWAY_NAME = "review->review:abf"


class ABF(nn.Module):
    """Attention-based fusion: ``x -> conv1x1+BN``; fused with the upsampled deeper residual
    by a 2-channel sigmoid attention; ``conv3x3+BN`` to the teacher's channels."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.attention = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        )

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.reduce(x)
        if self.attention is not None and residual is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.attention(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:]
        return self.expand(x), x


def review_levels(feats: Sequence[Tensor]) -> list[Tensor]:
    """The levels of ReviewKD: the stage features, shallow to deep, plus the globally pooled
    last stage."""
    return [*feats, F.adaptive_avg_pool2d(feats[-1], 1)]


def build_abfs(
    student_channels: Sequence[int], teacher_channels: Sequence[int], mid_channels: int
) -> nn.ModuleList:
    """One ABF per level (the pooled level included), the deepest one without fusion."""
    s_ch = [*student_channels, student_channels[-1]]
    t_ch = [*teacher_channels, teacher_channels[-1]]
    n = len(s_ch)
    return nn.ModuleList(ABF(s_ch[i], mid_channels, t_ch[i], fuse=i < n - 1) for i in range(n))


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """``x`` at ``like``'s spatial size (nearest, as ReviewKD resizes to the teacher's)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


def review_loss(
    abfs: nn.ModuleList, student: Sequence[Tensor], teacher: Sequence[Tensor]
) -> Tensor:
    """Sum over levels of HCL(fused student level, teacher level); both lists are levels
    (`review_levels`), shallow to deep."""
    outs: list[Tensor] = [torch.empty(0)] * len(student)
    residual = None
    for i in reversed(range(len(student))):
        outs[i], residual = abfs[i](student[i], residual)
    return sum(hcl_loss(resize_to(o, t).float(), t.float()) for o, t in zip(outs, teacher))


class ReviewPathway(nn.Module):
    """The review pathway of a DistPro search space: ABFs over the deepest ``levels`` student
    taps against the deepest ``levels`` teacher taps (levels paired shallow to deep, as the
    ReviewKD baseline pairs them), plus the pooled last stage.

    ``forward(student_feats, teacher_feats)`` takes the module's full tap lists and returns
    the scalar review loss."""

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        mid_channels: int = 64,
    ) -> None:
        super().__init__()
        if any(len(s) != 3 for s in [*student_shapes, *teacher_shapes]):
            raise ValueError(
                "review_kd needs 4-D stage features [B, C, H, W] on both sides; got student "
                f"taps {list(map(tuple, student_shapes))} and teacher taps "
                f"{list(map(tuple, teacher_shapes))}. Tap convolutional stages, or leave "
                "review_kd off."
            )
        self.levels = min(len(student_shapes), len(teacher_shapes))
        s = [shape[0] for shape in student_shapes[-self.levels :]]
        t = [shape[0] for shape in teacher_shapes[-self.levels :]]
        self.abfs = build_abfs(s, t, mid_channels)

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        s = review_levels(student_feats[-self.levels :])
        t = review_levels(teacher_feats[-self.levels :])
        return review_loss(self.abfs, s, t)
