"""Transform blocks ``M_{i,j,k}`` that map a student feature to its teacher feature's shape.

Paper Fig. 4: convolutions with BatchNorm change the channel count, a self-attention block
(1x1 conv to one channel, sigmoid, multiply the input by it) re-weights positions, and an
interpolation aligns the spatial size with the teacher's (taken from the teacher
feature at run time, so one module serves any input resolution). When the student map is larger
than the teacher's, it is pooled *first* so the convolutions run at the smaller size.

Kinds:

* ``conv_bn``: 1x1 conv + BN, resize.
* ``attn2``: 1x1 conv + BN, self-attention, 3x3 conv + BN, resize.
* ``attn3``: 1x1 conv + BN, self-attention, 3x3 conv + BN + ReLU, 3x3 conv + BN, resize.
* ``token``: for token features ``[B, N, C]`` (vision transformers): LayerNorm + Linear to
  the teacher's width, token count aligned by linear interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

TRANSFORM_KINDS: tuple[str, ...] = ("conv_bn", "attn2", "attn3", "token")


class SelfAttention2d(nn.Module):
    """Spatial self-attention of Fig. 4b: ``x * sigmoid(conv1x1(x))`` with a one-channel map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.score(x).sigmoid()


def resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` at spatial ``size``: unchanged, average-pooled (shrinking) or bilinear (growing)."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FeatureTransform(nn.Module):
    """A convolutional transform block for 4-D feature maps.

    Args:
        kind: ``"conv_bn"``, ``"attn2"`` or ``"attn3"``.
        student_shape: ``(C_s, H_s, W_s)`` of the student feature.
        teacher_shape: ``(C_t, H_t, W_t)`` of the teacher feature.
    """

    def __init__(
        self, kind: str, student_shape: Sequence[int], teacher_shape: Sequence[int]
    ) -> None:
        super().__init__()
        if kind not in ("conv_bn", "attn2", "attn3"):
            raise ValueError(
                f"FeatureTransform kind must be conv_bn, attn2 or attn3, got {kind!r}."
            )
        c_s, c_t = int(student_shape[0]), int(teacher_shape[0])
        self.kind = kind
        layers: list[nn.Module] = [nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t)]
        if kind != "conv_bn":
            layers.append(SelfAttention2d(c_t))
            n_convs = 1 if kind == "attn2" else 2
            for idx in range(n_convs):
                layers += [nn.Conv2d(c_t, c_t, 3, padding=1, bias=False), nn.BatchNorm2d(c_t)]
                if idx < n_convs - 1:
                    layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Transform ``x`` and resize it to the teacher's spatial ``size`` ``(H, W)``."""
        if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
            return self.body(resize_map(x, size))
        return resize_map(self.body(x), size)


class TokenTransform(nn.Module):
    """Token transform for ``[B, N, C]`` features (DeiT-style students).

    LayerNorm + Linear maps the student width to the teacher's; if the token counts differ
    the token axis is linearly interpolated.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(int(student_shape[1]))
        self.proj = nn.Linear(int(student_shape[1]), int(teacher_shape[1]))

    def forward(self, x: Tensor, tokens: int) -> Tensor:
        """Project ``x`` to the teacher's width and ``tokens`` tokens."""
        y = self.proj(self.norm(x))
        if y.shape[1] != tokens:
            y = F.interpolate(y.transpose(1, 2), size=tokens, mode="linear", align_corners=False)
            y = y.transpose(1, 2)
        return y


def build_transform(
    kind: str, student_shape: Sequence[int], teacher_shape: Sequence[int]
) -> nn.Module:
    """Build the transform block of ``kind`` for one pathway.

    ``student_shape`` and ``teacher_shape`` are per-sample shapes (no batch dimension):
    ``(C, H, W)`` for feature maps, ``(N, C)`` for tokens. 4-D maps use the convolutional
    kinds; token features always use the token transform (whatever ``kind`` says), since
    convolutions do not apply to them.
    """
    if kind not in TRANSFORM_KINDS:
        raise ValueError(
            f"Unknown transform kind {kind!r}. Choose from: {', '.join(TRANSFORM_KINDS)}."
        )
    s_dim, t_dim = len(student_shape), len(teacher_shape)
    if s_dim == 3 and t_dim == 3:
        if kind == "token":
            raise ValueError(
                "Transform 'token' needs token features [B, N, C]; got 4-D feature maps."
            )
        return FeatureTransform(kind, student_shape, teacher_shape)
    if s_dim == 2 and t_dim == 2:
        return TokenTransform(student_shape, teacher_shape)
    if s_dim == 1 or t_dim == 1:
        raise ValueError(
            f"Cannot connect a student feature of per-sample shape {tuple(student_shape)} to a "
            f"teacher feature of shape {tuple(teacher_shape)}: 1-D features (C,), such as the "
            "output of a Linear layer like 'fc' or of global pooling, are not pathway features. "
            "Supported: feature maps (C, H, W) to feature maps (kinds conv_bn, attn2, attn3) "
            "and token sequences (N, C) to token sequences (kind token). Tap the "
            "convolutional stages or transformer blocks before the pooling; to distil the "
            "logits, use response_kd=True."
        )
    raise ValueError(
        f"Cannot connect a student feature of per-sample shape {tuple(student_shape)} to a teacher "
        f"feature of shape {tuple(teacher_shape)}: both must be feature maps (C, H, W) or both "
        "token sequences (N, C). Choose taps of matching kinds."
    )
