"""The model keys of a ``distpro`` command line checked before jsonargparse parses them: a
mistyped key (``--model.init_args.distillation.transform``) or a flat key of version 0.1
(``model.init_args.transforms`` in a YAML file) is named with the closest key and its
grouped form, instead of jsonargparse's pages about every subtype of the model union.

Only a model of this library (a `StudentModule` such as `DistProModule`) is checked; the
keys of any other class are left to jsonargparse."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from distpro_lightning.grouping import did_you_mean
from distpro_lightning.modules.config import DISTILLATION_FLAT_KEYS, DistillationConfig
from distpro_lightning.modules.student import (
    OPTIMIZER_FLAT_KEYS,
    OptimizerConfig,
    StudentModule,
)

PREFIX = "model.init_args."
GROUPS: dict[str, type] = {"distillation": DistillationConfig, "optimizer": OptimizerConfig}


def _configs(argv: Sequence[str]) -> Iterator[Any]:
    """The decoded ``--config`` / ``-c`` values of ``argv`` (files or inline YAML/JSON)."""
    for i, arg in enumerate(argv):
        key, sep, value = arg.partition("=")
        if key not in ("--config", "-c"):
            continue
        if not sep:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        try:
            path = Path(value)
            text = path.read_text() if path.is_file() else value
            yield yaml.safe_load(text)
        except (OSError, yaml.YAMLError, ValueError):
            continue


def _dotted(values: Any, prefix: str = "") -> list[str]:
    """The keys of ``init_args`` as dotted names, one level into the groups."""
    if not isinstance(values, dict):
        return []
    out = []
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict) and not prefix:
            out += [f"{key}.{k}" for k in value]
        else:
            out.append(f"{prefix}{key}")
    return out


def model_keys(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The model's ``class_path`` (the last one given) and the ``init_args`` keys given in
    ``argv``'s config files and options, as dotted names below ``model.init_args``."""
    class_path: str | None = None
    keys: list[str] = []
    for config in _configs(argv):
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, str):
            class_path = model
        elif isinstance(model, dict):
            class_path = model.get("class_path", class_path)
            keys += _dotted(model.get("init_args"))
    for i, arg in enumerate(argv):
        key, sep, value = arg.partition("=")
        if key in ("--model", "--model.class_path"):
            class_path = value if sep else (argv[i + 1] if i + 1 < len(argv) else None)
        elif key.startswith("--" + PREFIX):
            name = key[len("--" + PREFIX) :]
            parsed = yaml.safe_load(value) if sep and value.startswith("{") else None
            keys += _dotted({name: parsed}) if name in GROUPS and parsed else [name]
    return class_path, keys


def _resolve(class_path: str | None) -> type | None:
    if not class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module or "distpro_lightning"), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def key_problem(argv: Sequence[str]) -> str | None:
    """What is wrong with the first bad model key of ``argv`` (``None``: nothing found)."""
    class_path, keys = model_keys(argv)
    cls = _resolve(class_path)
    if cls is None or not issubclass(cls, StudentModule):
        return None
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p, v in params.items() if p != "self" and v.kind is not v.VAR_KEYWORD]
    flat = {**DISTILLATION_FLAT_KEYS, **OPTIMIZER_FLAT_KEYS}
    for key in keys:
        top, _, rest = key.partition(".")
        if top in GROUPS and top in valid and rest:
            names = [f.name for f in fields(GROUPS[top])]  # type: ignore[arg-type]
            field = rest.split(".")[0]
            if field not in names:
                return (
                    f"{PREFIX}{key} is not a setting{did_you_mean(field, names)}: "
                    f"{PREFIX}{top} has {', '.join(names)}."
                )
        elif top not in valid and top in flat:
            group, field = flat[top]
            return (
                f"{PREFIX}{top} is a flat key of version 0.1: write it in its group, "
                f"{PREFIX}{group}.{field} (in YAML: {group}: {{{field}: ...}} under init_args)."
            )
        elif top not in valid:
            return (
                f"{PREFIX}{top} is not an argument of {cls.__name__}"
                f"{did_you_mean(top, valid)}; it takes {', '.join(valid)}."
            )
    return None
