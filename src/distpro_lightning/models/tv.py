"""Torchvision (ImageNet-style) models with stage names for feature distillation.

The models are built by torchvision with ``weights=None`` (randomly initialised; nothing is
downloaded). When ``in_channels != 3`` the first convolution is replaced by one of the same
kind (kernel, stride, padding, bias) taking ``in_channels`` inputs.

Stage names (five taps, aligned to the five resolutions of the DistPro ImageNet setting; for a
224x224 input the taps are 112, 56, 28, 14 and 7 pixels wide, halving at every tap):

* ``tv_resnet18``, ``tv_resnet34``, ``tv_resnet50``:
  ``["relu", "layer1", "layer2", "layer3", "layer4"]`` (``relu`` is the stem activation).
* ``tv_mobilenet_v2``: the last block of each resolution inside ``features``:
  ``["features.1", "features.3", "features.6", "features.13", "features.18"]``
  (``features.18`` is the final 1x1 conv to 1280 channels).
* ``tv_shufflenet_v2`` (1.0x): ``["conv1", "maxpool", "stage2", "stage3", "stage4"]``
  (``conv1`` is the stride-2 stem before the max-pool; the final ``conv5`` is left out
  because it shares ``stage4``'s resolution).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision import models as tvm

__all__ = ["TORCHVISION_MODELS", "TORCHVISION_STAGE_NAMES", "build_torchvision"]

_RESNET_STAGES = ("relu", "layer1", "layer2", "layer3", "layer4")

TORCHVISION_STAGE_NAMES: dict[str, tuple[str, ...]] = {
    "tv_resnet18": _RESNET_STAGES,
    "tv_resnet34": _RESNET_STAGES,
    "tv_resnet50": _RESNET_STAGES,
    "tv_mobilenet_v2": ("features.1", "features.3", "features.6", "features.13", "features.18"),
    "tv_shufflenet_v2": ("conv1", "maxpool", "stage2", "stage3", "stage4"),
}

# Registry name -> (torchvision constructor, dotted name of the first convolution).
TORCHVISION_MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "tv_resnet18": (tvm.resnet18, "conv1"),
    "tv_resnet34": (tvm.resnet34, "conv1"),
    "tv_resnet50": (tvm.resnet50, "conv1"),
    "tv_mobilenet_v2": (tvm.mobilenet_v2, "features.0.0"),
    "tv_shufflenet_v2": (tvm.shufflenet_v2_x1_0, "conv1.0"),
}


def _replace_first_conv(model: nn.Module, path: str, in_channels: int) -> None:
    """Swap the convolution at dotted ``path`` for a copy taking ``in_channels`` inputs."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"expected a Conv2d at {path!r}, found {type(old).__name__}")
    if old.groups != 1:
        raise ValueError(f"cannot change the input channels of grouped conv {path!r}")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, attr, new)


def build_torchvision(
    name: str, num_classes: int, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build torchvision model ``name`` (a key of `TORCHVISION_MODELS`).

    ``kwargs`` go to the torchvision constructor. The returned model carries a
    ``stage_names: list[str]`` attribute (see the module docstring).
    """
    ctor, first_conv = TORCHVISION_MODELS[name]
    model = ctor(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, first_conv, in_channels)
    model.stage_names = list(TORCHVISION_STAGE_NAMES[name])
    return model
