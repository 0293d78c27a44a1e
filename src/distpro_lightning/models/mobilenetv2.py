"""MobileNetV2 for CIFAR-sized inputs, as used as a KD student (CRD/RepDistiller, DKD).

Layout for a 32x32 input (expansion ``t = 6``, channels before width scaling):

```text
stem     3x3 conv, stride 2, 32 ch                 -> 16x16
stage1   [t=1, 16 ch, x1, s1] + [t, 24 ch, x2, s1] -> 16x16
stage2   [t, 32 ch, x3, s2]                        -> 8x8
stage3   [t, 64 ch, x4, s2] + [t, 96 ch, x3, s1]   -> 4x4
stage4   [t, 160 ch, x3, s2] + [t, 320 ch, x1, s1] -> 2x2
head     1x1 conv to 1280 ch, BN-ReLU, adaptive average pool, linear
```

Unlike the ImageNet model the 24-channel group keeps stride 1, so there are four resolutions
after the stem. Channel counts (stem and blocks) are ``int(c * width_mult)``; the 1280-channel
head is only scaled when ``width_mult > 1``.

**Width choice.** The registry name ``mobilenet_v2`` builds ``width_mult=0.5``, the model the
CRD/RepDistiller benchmark calls "MobileNetV2" on CIFAR-100 (``mobile_half``, ~0.8M params with
100 classes). Pass ``width_mult=1.0`` (e.g. ``create("mobilenet_v2", 100, width_mult=1.0)``)
for the full-width network.

Stage names: ``["stage1", "stage2", "stage3", "stage4"]`` (strides 2, 4, 8, 16).
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import conv1x1, conv3x3, init_weights

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when ``expand_ratio == 1``), depthwise 3x3, linear 1x1 projection.

    A residual connection (out of place) is used when input and output shapes match.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_planes * expand_ratio
        self.use_residual = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [conv1x1(in_planes, hidden), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers += [
            conv3x3(hidden, hidden, stride, groups=hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            conv1x1(hidden, out_planes),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion, channels, repeats, stride) per block group, grouped into the four stages.
_STAGES: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, 2, 1)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 for CIFAR-sized inputs.

    Args:
        num_classes: classifier outputs.
        in_channels: input image channels.
        width_mult: channel multiplier (0.5 is the KD-benchmark student, 1.0 the full model).
        expand_ratio: expansion factor ``t`` of the inverted residuals (except the first).
        last_channels: channels of the head's 1x1 convolution (scaled when ``width_mult > 1``).

    Stage names: ``["stage1", "stage2", "stage3", "stage4"]`` (strides 2, 4, 8, 16).
    """

    STAGE_NAMES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4")

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        width_mult: float = 0.5,
        expand_ratio: int = 6,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        self.stage_names: list[str] = list(self.STAGE_NAMES)
        self.width_mult = width_mult

        def scale(c: int) -> int:
            return max(1, int(c * width_mult))

        planes = scale(32)
        self.stem = nn.Sequential(
            conv3x3(in_channels, planes, stride=2), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
        )
        stages: list[nn.Sequential] = []
        for groups in _STAGES:
            blocks: list[nn.Module] = []
            for t, c, n, s in groups:
                ratio = expand_ratio if t != 1 else 1
                out_planes = scale(c)
                for i in range(n):
                    blocks.append(InvertedResidual(planes, out_planes, s if i == 0 else 1, ratio))
                    planes = out_planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages

        head = int(last_channels * width_mult) if width_mult > 1.0 else last_channels
        self.head = nn.Sequential(
            conv1x1(planes, head), nn.BatchNorm2d(head), nn.ReLU(inplace=True)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.head(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def mobilenet_v2(
    num_classes: int = 100, in_channels: int = 3, width_mult: float = 0.5
) -> MobileNetV2:
    """CIFAR MobileNetV2, by default at width 0.5 (the KD-benchmark "MobileNetV2").

    Stages: ``stage1, stage2, stage3, stage4`` (12/16/48/160 channels at width 0.5).
    """
    return MobileNetV2(num_classes, in_channels, width_mult=width_mult)
