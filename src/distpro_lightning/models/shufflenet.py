"""ShuffleNet V1 / V2 variants for CIFAR-sized inputs, as used as KD students.

Both keep full resolution in the stem (no stride, no max-pool), so a 32x32 input gives
16x16, 8x8 and 4x4 stage outputs.

* `shufflenet_v1`: 1x1 stem to 24 channels, three stages of 4/8/4 grouped bottlenecks
  (groups=3, stage widths 240/480/960; each stage opens with a stride-2 unit that concatenates
  an average-pooled shortcut), then pooling + linear. As in the CRD/RepDistiller student, a
  ReLU follows the depthwise convolution. ~0.95M params with 100 classes.
* `shufflenet_v2`: 3x3 stem to 24 channels, three stages of 4/8/4 units (a stride-2
  down-sampling unit then 3/7/3 split units, widths 116/232/464), a 1x1 conv to 1024 channels,
  pooling + linear (the 1.0x model). ~1.36M params with 100 classes.

Stage names (both): ``["layer1", "layer2", "layer3"]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._common import StemThreeStages, channel_shuffle, conv1x1, conv3x3

__all__ = [
    "ShuffleNetV1",
    "ShuffleNetV2",
    "shufflenet_v1",
    "shufflenet_v2",
]


class ShuffleV1Unit(nn.Module):
    """ShuffleNet V1 bottleneck: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1.

    With ``stride == 2`` the residual branch produces ``out_planes`` channels that are
    concatenated with an average-pooled copy of the input; otherwise it is added to the input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_planes // 4
        # The first unit after the 24-channel stem uses an ungrouped 1x1 (too few channels).
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = conv1x1(in_planes, mid, groups=self.first_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, out_planes, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.stride = stride
        self.shortcut: nn.Module | None = (
            nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            return F.relu(torch.cat([out, self.shortcut(x)], dim=1))
        return F.relu(out + x)


class ShuffleNetV1(StemThreeStages):
    """ShuffleNet V1 for CIFAR-sized inputs.

    Args:
        num_classes: classifier outputs.
        in_channels: input image channels.
        groups: group count of the 1x1 convolutions.
        stage_planes: output channels of the three stages.
        stage_blocks: units per stage.

    Stage names: ``["layer1", "layer2", "layer3"]`` (strides 2, 4, 8 relative to the input).
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        groups: int = 3,
        stage_planes: tuple[int, int, int] = (240, 480, 960),
        stage_blocks: tuple[int, int, int] = (4, 8, 4),
    ) -> None:
        super().__init__()
        stages = [(planes, blocks, groups) for planes, blocks in zip(stage_planes, stage_blocks)]
        self._build_trunk(conv1x1(in_channels, 24), self._make_layer, stages)
        self._finish(stage_planes[2], num_classes)

    def _make_layer(self, out_planes: int, blocks: int, groups: int) -> nn.Sequential:
        units = []
        for i in range(blocks):
            if i == 0:
                # Stride-2 unit: the residual branch fills the channels the shortcut does not.
                units.append(
                    ShuffleV1Unit(self._in_planes, out_planes - self._in_planes, 2, groups)
                )
            else:
                units.append(ShuffleV1Unit(out_planes, out_planes, 1, groups))
            self._in_planes = out_planes
        return nn.Sequential(*units)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet V2 basic unit: split channels, transform one half, concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv1x1(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            conv3x3(half, half, groups=half),
            nn.BatchNorm2d(half),
            conv1x1(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], dim=1), 2)


class ShuffleV2DownUnit(nn.Module):
    """ShuffleNet V2 down-sampling unit: two stride-2 branches, concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.left = nn.Sequential(
            conv3x3(in_channels, in_channels, stride=2, groups=in_channels),
            nn.BatchNorm2d(in_channels),
            conv1x1(in_channels, mid),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.right = nn.Sequential(
            conv1x1(in_channels, mid),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            conv3x3(mid, mid, stride=2, groups=mid),
            nn.BatchNorm2d(mid),
            conv1x1(mid, mid),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)


class ShuffleNetV2(StemThreeStages):
    """ShuffleNet V2 (1.0x) for CIFAR-sized inputs.

    Args:
        num_classes: classifier outputs.
        in_channels: input image channels.
        stage_channels: output channels of the three stages.
        stage_blocks: basic units per stage (after the down-sampling unit).
        last_channels: channels of the final 1x1 convolution.

    Stage names: ``["layer1", "layer2", "layer3"]`` (strides 2, 4, 8 relative to the input).
    The final 1x1 convolution (``conv2``, ``bn2``, ReLU) follows ``layer3``.
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        stage_channels: tuple[int, int, int] = (116, 232, 464),
        stage_blocks: tuple[int, int, int] = (3, 7, 3),
        last_channels: int = 1024,
    ) -> None:
        super().__init__()
        stages = zip(stage_channels, stage_blocks)
        self._build_trunk(conv3x3(in_channels, 24), self._make_layer, stages)
        self.conv2 = conv1x1(stage_channels[2], last_channels)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self._finish(last_channels, num_classes)

    def _make_layer(self, out_channels: int, blocks: int) -> nn.Sequential:
        units: list[nn.Module] = [ShuffleV2DownUnit(self._in_planes, out_channels)]
        units += [ShuffleV2Unit(out_channels) for _ in range(blocks)]
        self._in_planes = out_channels
        return nn.Sequential(*units)

    def _before_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(x)), inplace=True)


def shufflenet_v1(num_classes: int = 100, in_channels: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet V1, groups=3 (the CRD/RepDistiller ``ShuffleV1``).

    Stages: ``layer1, layer2, layer3`` (240/480/960 channels). Extra keyword arguments go to
    `ShuffleNetV1`.
    """
    return ShuffleNetV1(num_classes, in_channels, **kwargs)


def shufflenet_v2(num_classes: int = 100, in_channels: int = 3, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x (the CRD/RepDistiller ``ShuffleV2``).

    Stages: ``layer1, layer2, layer3`` (116/232/464 channels). Extra keyword arguments go to
    `ShuffleNetV2`.
    """
    return ShuffleNetV2(num_classes, in_channels, **kwargs)
