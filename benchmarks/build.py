"""Build the library's modules from one flat set of keyword arguments, as the benchmarks
state their settings: a keyword the class takes stays; a field of `DistillationConfig`
goes into ``distillation``, one of `OptimizerConfig` into ``optimizer``."""

from __future__ import annotations

import inspect
from dataclasses import fields, is_dataclass, replace
from typing import Any

from distpro_lightning import DistillationConfig, OptimizerConfig


def build_module(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **grouped kwargs)`` (see the module docs)."""
    own = set(inspect.signature(cls.__init__).parameters)
    groups: dict[str, dict[str, Any]] = {"distillation": {}, "optimizer": {}}
    for group, kind in (("distillation", DistillationConfig), ("optimizer", OptimizerConfig)):
        names = {f.name for f in fields(kind)} - own
        for key in [k for k in kwargs if k in names]:
            groups[group][key] = kwargs.pop(key)
    if isinstance(kwargs.get("optimizer"), str):
        groups["optimizer"]["name"] = kwargs.pop("optimizer")
    for group, values in groups.items():
        given = kwargs.get(group)
        if values and group in own and is_dataclass(given):
            kwargs[group] = replace(given, **values)
        elif values and group in own:
            kwargs[group] = {**(given or {}), **values}
        elif values:
            raise TypeError(f"{cls.__name__} takes no {group} settings {sorted(values)}.")
    return cls(*args, **kwargs)
