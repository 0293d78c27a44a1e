"""CIFAR ResNets of the knowledge-distillation literature (CRD/RepDistiller, ReviewKD, DKD).

A 3x3 stem convolution (stride 1) is followed by three stages of basic residual blocks at
full, half and quarter resolution, adaptive average pooling and a linear classifier.
``resnetD`` has depth ``D = 6n + 2`` (``n`` blocks per stage) and stage widths 16/32/64
behind a 16-channel stem; the ``x4`` variants are four times wider (stem 32, stages
64/128/256). Shortcuts that change shape use a 1x1 convolution + BatchNorm projection.

Stage names (outputs of the three stages, post-ReLU, 4-D): ``["layer1", "layer2", "layer3"]``.
For a 32x32 input their spatial sizes are 32, 16 and 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import StemThreeStages, blocks_per_stage, conv1x1, conv3x3

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet44",
    "resnet56",
    "resnet110",
]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    The block output is ``relu(residual + shortcut)``, computed out of place.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet(StemThreeStages):
    """CIFAR ResNet with three stages of `BasicBlock`.

    Args:
        depth: total depth ``6n + 2``.
        widths: ``(stem, stage1, stage2, stage3)`` channel counts.
        num_classes: classifier outputs.
        in_channels: input image channels.

    Stage names: ``["layer1", "layer2", "layer3"]`` (strides 1, 2, 2 relative to the input).
    """

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth, 2, "CIFAR ResNet")
        self.depth = depth
        stages = [(widths[1], n, 1), (widths[2], n, 2), (widths[3], n, 2)]
        self._build_trunk(conv3x3(in_channels, widths[0]), self._make_layer, stages)
        self._finish(widths[3], num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self._in_planes, planes, stride if i == 0 else 1))
            self._in_planes = planes
        return nn.Sequential(*layers)


_NARROW = (16, 16, 32, 64)
_WIDE_X4 = (32, 64, 128, 256)


def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 (n=1, widths 16/32/64). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(8, _NARROW, num_classes, in_channels)


def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-14 (n=2, widths 16/32/64). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(14, _NARROW, num_classes, in_channels)


def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (n=3, widths 16/32/64, ~0.28M params). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(20, _NARROW, num_classes, in_channels)


def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n=5, widths 16/32/64, ~0.47M params). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(32, _NARROW, num_classes, in_channels)


def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (n=7, widths 16/32/64). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(44, _NARROW, num_classes, in_channels)


def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (n=9, widths 16/32/64, ~0.86M params). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(56, _NARROW, num_classes, in_channels)


def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (n=18, widths 16/32/64, ~1.7M params). Stages: ``layer1, layer2, layer3``."""
    return CifarResNet(110, _NARROW, num_classes, in_channels)


def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8x4 (n=1, stem 32, widths 64/128/256, ~1.2M params).

    Stages: ``layer1, layer2, layer3``.
    """
    return CifarResNet(8, _WIDE_X4, num_classes, in_channels)


def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32x4 (n=5, stem 32, widths 64/128/256, ~7.4M params).

    Stages: ``layer1, layer2, layer3``.
    """
    return CifarResNet(32, _WIDE_X4, num_classes, in_channels)
