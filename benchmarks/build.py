"""Build the library's modules from one flat set of keyword arguments, as the benchmarks
state their settings: a keyword the class takes stays; a field of `DistillationConfig`
goes into ``distillation``, one of `OptimizerConfig` into ``optimizer``."""

from __future__ import annotations

import inspect
from dataclasses import is_dataclass, replace
from typing import Any

from distpro_lightning.grouping import split_flat
from distpro_lightning.modules.config import DISTILLATION_FLAT_KEYS
from distpro_lightning.modules.student import OPTIMIZER_FLAT_KEYS


def build_module(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **grouped kwargs)`` (see the module docs)."""
    own = set(inspect.signature(cls.__init__).parameters)
    keys = {
        k: v for k, v in {**DISTILLATION_FLAT_KEYS, **OPTIMIZER_FLAT_KEYS}.items() if k not in own
    }
    if isinstance(kwargs.get("optimizer"), str):  # the optimizer's name
        keys["optimizer"] = OPTIMIZER_FLAT_KEYS["optimizer"]
    kwargs, groups = split_flat(kwargs, keys)
    for group, values in groups.items():
        given = kwargs.get(group)
        if group in own and is_dataclass(given):
            kwargs[group] = replace(given, **values)
        elif group in own:
            kwargs[group] = {**(given or {}), **values}
        else:
            raise TypeError(f"{cls.__name__} takes no {group} settings {sorted(values)}.")
    return cls(*args, **kwargs)
