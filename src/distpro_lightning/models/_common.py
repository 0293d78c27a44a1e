"""Small building blocks shared by the CIFAR-style models."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows it)."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BatchNorm follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, groups=groups, bias=False)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``x`` across ``groups`` (ShuffleNet's channel shuffle).

    Returns a new tensor; ``x`` is not modified.
    """
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions and unit/zero BatchNorm; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def blocks_per_stage(depth: int, extra: int, family: str) -> int:
    """``n`` of a three-stage network of depth ``6n + extra`` (``n >= 1``); raises otherwise."""
    if (depth - extra) % 6 != 0 or depth < 6 + extra:
        raise ValueError(f"{family} depth must be 6n+{extra} with n >= 1, got {depth}")
    return (depth - extra) // 6


class StemThreeStages(nn.Module):
    """Base of the networks whose forward is ``relu(bn1(conv1(x)))``, ``layer1``,
    ``layer2``, ``layer3``, `_before_pool`, global average pooling and ``fc``; the subclass
    builds them with `_build_trunk` and `_finish`."""

    STAGE_NAMES: tuple[str, ...] = ("layer1", "layer2", "layer3")

    conv1: nn.Module
    bn1: nn.Module
    relu: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    avgpool: nn.Module
    fc: nn.Module

    def _build_trunk(
        self, stem: nn.Conv2d, make_layer: Callable[..., nn.Module], stages: Iterable[tuple]
    ) -> None:
        """Add ``stage_names``, the stem (``stem``, BatchNorm, ReLU) and ``layer1..3``, built
        in order by ``make_layer(*args)`` for each ``args`` of ``stages``; ``make_layer``
        reads and advances ``self._in_planes`` (the stem's channels to start with)."""
        self.stage_names: list[str] = list(self.STAGE_NAMES)
        self.conv1 = stem
        self.bn1 = nn.BatchNorm2d(stem.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self._in_planes = stem.out_channels
        for name, args in zip(self.STAGE_NAMES, stages, strict=True):
            setattr(self, name, make_layer(*args))

    def _finish(self, channels: int, num_classes: int) -> None:
        """Add the pooling and the classifier of ``channels`` features, then initialise."""
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self._before_pool(self.layer3(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def _before_pool(self, x: torch.Tensor) -> torch.Tensor:
        """What runs between ``layer3`` and the pooling: nothing by default."""
        return x
