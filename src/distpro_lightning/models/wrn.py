"""Wide residual networks (Zagoruyko & Komodakis, 2016) for CIFAR-sized inputs.

``WRN-d-k`` has a 16-channel 3x3 stem, three stages of ``n = (d - 4) / 6`` pre-activation
basic blocks with widths ``16k, 32k, 64k`` (strides 1, 2, 2), a final BN-ReLU, adaptive
average pooling and a linear classifier.

Stage names: ``["block1", "block2", "block3"]``. Their outputs are the raw (pre-activation)
block outputs, i.e. *before* the final BN-ReLU that follows ``block3``; for a 32x32 input the
spatial sizes are 32, 16 and 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import blocks_per_stage, conv1x1, conv3x3, init_weights

__all__ = [
    "PreActBlock",
    "WideResNet",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_16_4",
    "wrn_28_4",
    "wrn_40_1",
    "wrn_40_2",
]


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``x + conv(relu(bn(conv(relu(bn(x))))))``.

    When the shape changes, the shortcut is a 1x1 convolution applied to ``relu(bn(x))``.
    The input ``x`` is never modified in place.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = conv1x1(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bn1 returns a new tensor, so the in-place ReLU never touches ``x``.
        act = self.relu1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.relu2(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + identity


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for CIFAR-sized inputs.

    Args:
        depth: total depth ``6n + 4``.
        widen_factor: width multiplier ``k``.
        num_classes: classifier outputs.
        in_channels: input image channels.
        drop_rate: dropout between the two convolutions of each block (0 in the KD literature).

    Stage names: ``["block1", "block2", "block3"]`` (pre-activation block outputs).
    """

    STAGE_NAMES: tuple[str, ...] = ("block1", "block2", "block3")

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth, 4, "WRN")
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stage_names: list[str] = list(self.STAGE_NAMES)
        self.depth = depth
        self.widen_factor = widen_factor

        self.conv1 = conv3x3(in_channels, widths[0])
        self.block1 = self._make_block(widths[0], widths[1], n, 1, drop_rate)
        self.block2 = self._make_block(widths[1], widths[2], n, 2, drop_rate)
        self.block3 = self._make_block(widths[2], widths[3], n, 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @staticmethod
    def _make_block(
        in_planes: int, planes: int, n: int, stride: int, drop_rate: float
    ) -> nn.Sequential:
        return nn.Sequential(
            *[
                PreActBlock(
                    in_planes if i == 0 else planes, planes, stride if i == 0 else 1, drop_rate
                )
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        x = self.conv1(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        # ``self.bn`` makes a new tensor: the in-place ReLU leaves block3's output intact.
        x = self.relu(self.bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def wrn_16_1(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-16-1 (widths 16/32/64, ~0.18M params). Stages: ``block1, block2, block3``."""
    return WideResNet(16, 1, num_classes, in_channels, drop_rate)


def wrn_16_2(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-16-2 (widths 32/64/128, ~0.70M params). Stages: ``block1, block2, block3``."""
    return WideResNet(16, 2, num_classes, in_channels, drop_rate)


def wrn_16_4(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-16-4 (widths 64/128/256, ~2.8M params). Stages: ``block1, block2, block3``."""
    return WideResNet(16, 4, num_classes, in_channels, drop_rate)


def wrn_28_4(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-4 (widths 64/128/256, ~5.9M params). Stages: ``block1, block2, block3``."""
    return WideResNet(28, 4, num_classes, in_channels, drop_rate)


def wrn_40_1(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-40-1 (widths 16/32/64, ~0.57M params). Stages: ``block1, block2, block3``."""
    return WideResNet(40, 1, num_classes, in_channels, drop_rate)


def wrn_40_2(num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-40-2 (widths 32/64/128, ~2.3M params). Stages: ``block1, block2, block3``."""
    return WideResNet(40, 2, num_classes, in_channels, drop_rate)
