"""Grouped settings: the rarely changed knobs of a callback or module gathered in frozen
dataclasses (``alpha.lr``, ``distillation.transforms``, ``optimizer.lr``), given as an
object or as a mapping of its fields (YAML's nested keys, hyper-parameters read back from
a checkpoint), with their scalar types checked, and the flat keywords of earlier versions
mapped onto the groups with one deprecation warning."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, fields, is_dataclass, replace
from typing import Any, TypeVar


def rank_zero_warn(message: str, **kwargs: Any) -> None:
    """Lightning's ``rank_zero_warn``, imported when a warning is due: the pure helpers of
    this module (``did_you_mean``, used by the process commands) load no Lightning."""
    from lightning.pytorch.utilities import rank_zero_warn as warn

    warn(message, stacklevel=kwargs.pop("stacklevel", 5), **kwargs)


__all__ = [
    "check_field_types",
    "check_ranges",
    "coerce_group",
    "did_you_mean",
    "flat_to_groups",
    "given_fields",
    "plain",
    "non_negative",
    "positive",
    "say_unused",
    "split_flat",
]

T = TypeVar("T")


def check_field_types(config: Any) -> None:
    """Refuse a ``bool``, ``int``, ``float`` or ``str`` field of the wrong type, naming it
    (``overwrite="no"`` is truthy, and a string where a number goes fails only at the
    first step otherwise)."""
    group = type(config).__name__
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        ok = True
        if kind in ("bool", "bool | None"):  # "no" is truthy
            ok = isinstance(value, bool) or (kind != "bool" and value is None)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind in ("str", "str | None"):  # a path may be a PathLike
            ok = isinstance(value, str | os.PathLike) or (kind != "str" and value is None)
        if not ok:
            yaml = {"bool": "true/false", "bool | None": "true/false or null", "str": "a string"}
            yaml["str | None"] = "a string or null"
            raise TypeError(
                f"{group}.{f.name} takes {'an' if kind == 'int' else 'a'} {kind}, got "
                f"{type(value).__name__} {value!r} (in YAML: "
                f"{yaml.get(kind, 'a number without quotes')})."
            )


def positive(value: Any) -> bool:
    """A finite number above zero."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def non_negative(value: Any) -> bool:
    """A finite number at or above zero."""
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def say_unused(prefix: str, config: Any, cases: Mapping[str, str | None]) -> None:
    """Warn, by full key, about each field of ``cases`` (``name -> why it has no effect
    here``, ``None`` where it has one) whose value differs from its default:
    ``optimizer.momentum=0.5 has no effect with name='adam' (only 'sgd' uses it).``"""
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        for f in fields(config)
    }
    for name, why in cases.items():
        value = getattr(config, name)
        as_given = tuple(value) if isinstance(value, list) else value
        if why is not None and as_given != defaults[name]:
            rank_zero_warn(f"{prefix}.{name}={value} has no effect with {why}.")


def check_ranges(
    prefix: str, config: Any, rules: Mapping[str, tuple[Callable[[Any], bool], str]]
) -> None:
    """Refuse a field whose value breaks its rule (``name -> (ok, what it must be)``),
    naming it by its full key: ``search.alpha.lr must be a finite number > 0, got -1.``"""
    for name, (ok, must) in rules.items():
        value = getattr(config, name)
        if not ok(value):
            raise ValueError(f"{prefix}.{name} must be {must}, got {value!r}.")


def coerce_group(owner: str, param: str, kind: type[T], value: Any) -> T:
    """``value`` as a ``kind``: the object itself, or built from a mapping of its fields
    (an unknown field is refused with the closest name); anything else is refused."""
    if isinstance(value, Mapping):
        names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise TypeError(
                f"{owner}({param}=...): unknown keys {unknown}"
                f"{''.join(did_you_mean(u, names) for u in unknown)}; "
                f"{kind.__name__} has {sorted(names)}."
            )
        value = kind(**value)
    if not isinstance(value, kind):
        raise TypeError(
            f"{owner}({param}=...) takes a {kind.__name__} or a dict of its fields, got "
            f"{type(value).__name__}."
        )
    return value


def given_fields(value: Any, default: Any = None) -> frozenset[str]:
    """The fields a group argument sets explicitly: a mapping's keys; every field of an
    object other than the parameter's own ``default`` (one given equal to the default still
    says its values); none for ``None`` or the default itself."""
    if value is None or value is default:
        return frozenset()
    if isinstance(value, Mapping):
        return frozenset(value)
    return frozenset(f.name for f in fields(value)) if is_dataclass(value) else frozenset()


def split_flat(
    kwargs: Mapping[str, Any], keys: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(rest, changes)``: the keywords of ``kwargs`` that ``keys`` does not name, and the
    others filed by group (``keys``: ``flat name -> (group, field)``; ``changes``:
    ``group -> {field: value}``). Pure: it neither warns nor checks names."""
    rest: dict[str, Any] = {}
    changes: dict[str, dict[str, Any]] = {}
    for key, value in kwargs.items():
        if key in keys:
            group, name = keys[key]
            changes.setdefault(group, {})[name] = value
        else:
            rest[key] = value
    return rest, changes


def flat_to_groups(
    owner: str,
    flat: Mapping[str, Any],
    keys: Mapping[str, tuple[str, str]],
    groups: Mapping[str, Any],
    valid: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    explicit: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """``groups`` (name -> config object) with the deprecated flat keywords ``flat``
    applied through ``keys`` (``flat name -> (group, field)``), warning once with the new
    keys; a keyword that is neither flat nor in ``valid`` is refused with the closest name,
    and one that contradicts its group's given field (one named in ``explicit``, group ->
    fields the caller set, `given_fields`; or one that differs from the owner's default
    group in ``defaults``, else the class's) too."""
    unknown, changes = split_flat(flat, keys)
    if unknown:
        names = [*valid, *groups, *keys]
        shown = ", ".join(f"{u!r}{did_you_mean(u, names)}" for u in sorted(unknown))
        raise TypeError(f"{owner} got unknown arguments {shown}.")
    _refuse_given_twice(owner, changes, groups, keys, defaults or {}, explicit or {})
    if changes:
        old = ", ".join(flat)
        new = ", ".join(f"{keys[k][0]}.{keys[k][1]}" for k in flat)
        group, field = keys[next(iter(flat))]
        rank_zero_warn(
            f"{owner}({old}=...): flat keywords are deprecated; use the grouped settings "
            f"({new}): in Python a group object or a dict, e.g. {group}={{{field!r}: ...}}; "
            "in YAML nested keys.",
            category=FutureWarning,
        )
    return {g: replace(c, **changes.get(g, {})) for g, c in groups.items()}


def _refuse_given_twice(
    owner: str,
    changes: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Any],
    keys: Mapping[str, tuple[str, str]],
    defaults: Mapping[str, Any],
    explicit: Mapping[str, Iterable[str]],
) -> None:
    """Refuse a field set both in its group (named in ``explicit``, or to a value other
    than its default: the owner's default group's in ``defaults``, else the class's) and by
    a flat keyword to another value: one of the two would be silently dropped."""
    flat_of = {v: k for k, v in keys.items()}
    clashes = []
    for group, given in changes.items():
        specs = {f.name: f for f in fields(groups[group])}
        for name, value in given.items():
            current = getattr(groups[group], name)
            spec = specs[name]
            default = spec.default_factory() if spec.default is MISSING else spec.default
            if group in defaults:
                default = getattr(defaults[group], name)
            given = name in set(explicit.get(group, ())) or current != default
            if given and current != value:
                clashes.append(f"{group}.{name}={current!r} and {flat_of[(group, name)]}={value!r}")
    if clashes:
        raise TypeError(
            f"{owner} got a setting twice, in its group and as a flat keyword: "
            f"{'; '.join(clashes)}. Give each once, in its group."
        )


def plain(value: Any) -> Any:
    """A dataclass, tuple or mapping as plain dicts and lists (hyper-parameters that load
    with ``weights_only=True`` and write to YAML without Python tags)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'lr'?)`` when a valid name is close to ``name``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
