"""Model zoo for DistPro: CIFAR-style KD models and torchvision models, with stage names.

Every model built here carries ``stage_names: list[str]``: dotted module names (as in
``model.named_modules()``) whose outputs are the down-sampling stage feature maps a
feature-distillation method taps with forward hooks. Each such module runs exactly once per
forward and outputs a 4-D ``(B, C, H, W)`` tensor that is not modified in place afterwards;
``forward(x)`` returns logits only.

CIFAR-style models (any input size, adaptive pooling before the classifier; stage spatial
sizes given for a 32x32 input):

* ``resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110, resnet8x4,
  resnet32x4``: ``["layer1", "layer2", "layer3"]`` -- 32, 16, 8.
* ``wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2, wrn_16_4, wrn_28_4``:
  ``["block1", "block2", "block3"]`` (pre-activation block outputs) -- 32, 16, 8.
* ``shufflenet_v1`` (groups=3), ``shufflenet_v2`` (1.0x): ``["layer1", "layer2", "layer3"]``
  -- 16, 8, 4.
* ``mobilenet_v2`` (width 0.5 by default, the KD-benchmark student; ``width_mult=1.0`` for the
  full model): ``["stage1", "stage2", "stage3", "stage4"]`` -- 16, 8, 4, 2.

Torchvision models (``weights=None``; see `distpro_lightning.models.tv` for stage names):
``tv_resnet18, tv_resnet34, tv_resnet50, tv_mobilenet_v2, tv_shufflenet_v2``.

timm models (the ``timm`` extra, ``pretrained=False``): ``timm/<name>``, e.g.
``timm/resnet18``, ``timm/vit_base_patch16_224?img_size=32,patch_size=8``; stage names
from timm's ``feature_info`` (`distpro_lightning.models.timm_models`).

Example:

```python
from distpro_lightning import models

net = models.create("resnet20", num_classes=10, in_channels=1)
models.stage_names(net)  # ['layer1', 'layer2', 'layer3']
```
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import mobilenetv2, resnet_cifar, shufflenet, wrn
from .mobilenetv2 import MobileNetV2
from .resnet_cifar import CifarResNet
from .shufflenet import ShuffleNetV1, ShuffleNetV2
from .timm_models import build_timm, is_timm_name
from .tv import TORCHVISION_MODELS, TORCHVISION_STAGE_NAMES, build_torchvision
from .wrn import WideResNet

__all__ = [
    "CIFAR_MODELS",
    "CifarResNet",
    "MobileNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "TORCHVISION_MODELS",
    "WideResNet",
    "available_models",
    "create",
    "stage_names",
    "stage_shapes",
]

# Registry name -> (constructor(num_classes, in_channels, **kwargs), stage names).
CIFAR_MODELS: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    **{
        name: (getattr(resnet_cifar, name), CifarResNet.STAGE_NAMES)
        for name in (
            "resnet8",
            "resnet14",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "resnet8x4",
            "resnet32x4",
        )
    },
    **{
        name: (getattr(wrn, name), WideResNet.STAGE_NAMES)
        for name in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "wrn_16_4", "wrn_28_4")
    },
    "shufflenet_v1": (shufflenet.shufflenet_v1, ShuffleNetV1.STAGE_NAMES),
    "shufflenet_v2": (shufflenet.shufflenet_v2, ShuffleNetV2.STAGE_NAMES),
    "mobilenet_v2": (mobilenetv2.mobilenet_v2, MobileNetV2.STAGE_NAMES),
}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def available_models() -> list[str]:
    """Names accepted by `create`: the CIFAR-style models, then the ``tv_*`` ones."""
    return list(CIFAR_MODELS) + list(TORCHVISION_MODELS)


def _unknown(name: str) -> ValueError:
    names = available_models()
    close = difflib.get_close_matches(_normalize(name), names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"Unknown model {name!r}.{hint} Available models: {', '.join(names)}.")


def create(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs for ``in_channels``-channel images.

    Args:
        name: one of `available_models` (case-insensitive, ``-`` read as ``_``), or a timm
            model as ``timm/<name>[?key=value,...]`` (`timm_models`; the ``timm`` extra).
        num_classes: classifier outputs.
        in_channels: input image channels (1 for Fashion-MNIST, 3 for CIFAR/ImageNet).
        **kwargs: extra constructor arguments, e.g. ``width_mult=1.0`` for ``mobilenet_v2``.

    Returns:
        The model, randomly initialised, with a ``stage_names`` attribute.

    Raises:
        ValueError: for an unknown name; the message suggests the closest names.
    """
    if is_timm_name(name):
        return build_timm(name, num_classes, in_channels, **kwargs)
    key = _normalize(name)
    if key in CIFAR_MODELS:
        ctor, _ = CIFAR_MODELS[key]
        model = ctor(num_classes=num_classes, in_channels=in_channels, **kwargs)
    elif key in TORCHVISION_MODELS:
        model = build_torchvision(key, num_classes, in_channels, **kwargs)
    else:
        raise _unknown(name)
    return model


def stage_names(model_or_name: nn.Module | str) -> list[str]:
    """The stage names of a model, or of the registry model called ``model_or_name``.

    For a name nothing is built. For a module its ``stage_names`` attribute is returned
    (as a new list).

    Raises:
        ValueError: unknown name, or a module without a ``stage_names`` attribute.
    """
    if isinstance(model_or_name, str):
        key = _normalize(model_or_name)
        if key in CIFAR_MODELS:
            return list(CIFAR_MODELS[key][1])
        if key in TORCHVISION_STAGE_NAMES:
            return list(TORCHVISION_STAGE_NAMES[key])
        raise _unknown(model_or_name)
    names = getattr(model_or_name, "stage_names", None)
    if names is None:
        raise ValueError(
            f"{type(model_or_name).__name__} has no 'stage_names' attribute; build it with "
            "distpro_lightning.models.create or set model.stage_names = [...]"
        )
    return list(names)


@torch.no_grad()
def stage_shapes(
    model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), names: Sequence[str] | None = None
) -> dict[str, torch.Size]:
    """Run one dummy forward and return the output shape of each stage module.

    Args:
        model: a model with stage names (or pass ``names``).
        input_shape: ``(C, H, W)`` of one sample; a batch of 2 is used.
        names: stage names to probe; defaults to `stage_names` of ``model``.

    Returns:
        ``{stage_name: torch.Size([2, C, H, W])}`` in stage order. The model runs in eval mode
        (BatchNorm statistics are untouched) and its training flag is restored afterwards.
    """
    names = list(names) if names is not None else stage_names(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"stage names not found in {type(model).__name__}: {missing}")
    shapes: dict[str, torch.Size] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, out.shape))
        for n in names
    ]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        model.eval()
        model(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {n: shapes[n] for n in names}
