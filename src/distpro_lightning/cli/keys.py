"""The keys of a ``distpro`` command line checked before jsonargparse parses them: a
mistyped key (``--model.init_args.distillation.transform``, ``search.schedul`` in a YAML
file, ``--compare.budget.wal_s``) or a flat key of version 0.1 (``model.init_args.transforms``,
``search.alpha_lr``) is named with the closest key and its grouped form, instead of
jsonargparse's "does not accept option" or its pages about every subtype of the model union.

`key_problem` checks the model's keys (only a model of this library, a `StudentModule` such
as `DistProModule`; the keys of any other class are left to jsonargparse); `unknown_key`
checks every other key against the keys the parser takes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
from distpro_lightning.search.settings import FLAT_KEYS as SEARCH_FLAT_KEYS

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


#: The flat keys of version 0.1 per section, ``name -> (group, field)``.
SECTION_FLAT_KEYS: dict[str, Mapping[str, tuple[str, str]]] = {"search": SEARCH_FLAT_KEYS}
#: Option names that are not settings.
NOT_SETTINGS = ("help", "config", "print_config")


def parser_keys(parser: Any) -> set[str]:
    """The dotted keys a jsonargparse parser takes (its actions' destinations, without the
    ``--X.help`` options)."""
    actions = getattr(parser, "_actions", [])
    return {a.dest for a in actions if a.dest != "help" and not a.dest.endswith(".help")}


def _given_keys(argv: Sequence[str], known: set[str]) -> Iterator[str]:
    """The dotted keys of ``argv``'s config files (descending into mappings down to the
    parser's own leaves) and of its ``--key`` options."""

    def walk(values: Any, prefix: str) -> Iterator[str]:
        for key, value in values.items():
            name = f"{prefix}{key}"
            yield name
            if isinstance(value, dict) and name in known and _has_children(name, known):
                yield from walk(value, name + ".")

    for config in _configs(argv):
        if isinstance(config, dict):
            yield from walk(config, "")
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0].rstrip("+")
            if key and key.split(".")[-1] not in NOT_SETTINGS:
                yield key


def _has_children(key: str, known: Iterable[str]) -> bool:
    return any(k.startswith(key + ".") for k in known)


def unknown_key(argv: Sequence[str], known: set[str]) -> str | None:
    """What is wrong with the first key of ``argv`` that the parser does not take (``known``:
    `parser_keys`), naming the closest key it takes; keys below one of its leaves (a
    ``class_path`` section such as ``model``, a mapping such as ``compare.grids``) are left
    to that leaf's own checks. ``None``: every key is known."""
    for key in _given_keys(argv, known):
        parts = key.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        if key in known or any(a in known and not _has_children(a, known) for a in ancestors):
            continue
        parent = next((a for a in reversed(ancestors) if a in known), "")
        name = parts[len(parent.split(".")) if parent else 0]
        prefix = f"{parent}." if parent else ""
        siblings = sorted(
            {prefix + k[len(prefix) :].split(".")[0] for k in known if k.startswith(prefix)}
            - {prefix + n for n in NOT_SETTINGS}
        )
        flat = SECTION_FLAT_KEYS.get(parent, {}).get(name)
        if flat is not None:
            return (
                f"{prefix}{name} is a flat key of version 0.1: write it in its group, "
                f"{prefix}{flat[0]}.{flat[1]} (in YAML: {flat[0]}: {{{flat[1]}: ...}})."
            )
        return (
            f"{prefix}{name} is not a setting{did_you_mean(prefix + name, siblings)}; "
            f"{parent or 'the config'} takes {', '.join(s[len(prefix) :] for s in siblings)}."
        )
    return None
