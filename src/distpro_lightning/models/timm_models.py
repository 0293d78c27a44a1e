"""timm models by name (``"timm/<model name>"``), with their stage taps read from timm's own
stage description (``feature_info``): the optional ``timm`` extra
(``pip install 'distpro-lightning[timm]'``).

Constructor arguments ride in the name after ``?`` as ``key=value`` pairs separated by
commas (values read as YAML), so a YAML string can carry them:
``timm/deit_tiny_patch16_224?img_size=32,patch_size=8``. Weights are never downloaded
(``pretrained=False``); load trained weights from a local file (a teacher's ``teacher:``
path with ``teacher_model: timm/<name>``).

Stage taps (`feature_stage_names`): for a CNN, the stages of ``feature_info`` whose
reduction is at least 4 (the stem's activation, reduction 2, is not a stage the paper
taps); for a vision transformer, whose blocks all share one reduction, the last block of
each third (``blocks.3, blocks.7, blocks.11`` of a 12-block ViT). Their outputs are token
features ``[B, N, C]`` with the class token kept at position 0 (compared like any token:
the token transform maps widths and, where the counts differ, the token axis).
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

TIMM_PREFIX = "timm/"


def is_timm_name(name: str) -> bool:
    return name.strip().lower().startswith(TIMM_PREFIX)


def _parse(spec: str) -> tuple[str, dict[str, Any]]:
    import yaml

    name, _, query = spec.strip()[len(TIMM_PREFIX) :].partition("?")
    kwargs: dict[str, Any] = {}
    for item in filter(None, query.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(
                f"timm model {spec!r}: {item!r} is not key=value; write e.g. "
                "'timm/deit_tiny_patch16_224?img_size=32,patch_size=8'."
            )
        kwargs[key.strip()] = yaml.safe_load(value)
    return name.strip(), kwargs


def build_timm(spec: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The timm model of ``spec`` (``timm/<name>[?k=v,...]``), randomly initialised, with
    ``stage_names`` from its ``feature_info``."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(f"{spec!r} needs timm: pip install 'distpro-lightning[timm]'.") from exc
    name, query = _parse(spec)
    ours = {"pretrained", "num_classes", "in_chans"} & set(query)
    if ours:
        raise ValueError(
            f"timm model {spec!r}: {', '.join(sorted(ours))} is set by the library "
            "(pretrained=False: weights are never downloaded; num_classes and in_chans come "
            "from the module's num_classes and in_channels). Drop it from the name; for "
            "trained weights pass a local checkpoint (teacher: PATH with teacher_model: "
            f"{TIMM_PREFIX}<name>)."
        )
    if not timm.is_model(name):
        models = timm.list_models()
        lower = {m.lower(): m for m in models}
        close = [lower[name.lower()]] if name.lower() in lower else []
        close = close or difflib.get_close_matches(name.lower(), models, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown timm model {name!r}.{hint} (timm.list_models() lists them.)")
    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **query, **kwargs
    )
    names = feature_stage_names(model)
    if names:
        model.stage_names = names
    return model


def feature_stage_names(model: nn.Module) -> list[str] | None:
    """The stage taps of a model that describes its stages (timm's ``feature_info``), or
    ``None`` for a model that does not (see the module docs for the choice)."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list | tuple) or not info or not all(isinstance(e, dict) for e in info):
        return None
    modules = [str(e["module"]) for e in info if "module" in e]
    reductions = [e.get("reduction") for e in info if "module" in e]
    if not modules:
        return None
    if len(set(reductions)) == 1:  # a transformer: one resolution for every block
        n = len(modules)
        picks = sorted({max(0, round(n * k / 3) - 1) for k in (1, 2, 3)})
        return [modules[i] for i in picks]
    return [m for m, r in zip(modules, reductions) if r is None or r >= 4]
