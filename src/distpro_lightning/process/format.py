"""The process file format: version, field validation and reading the JSON safely.

`DistillationProcess` builds on it; every check here
raises `ProcessFileError` with a message that names the field and the problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distpro_lightning.errors import DistProError
from distpro_lightning.functional.normalization import check_normalization

FORMAT_NAME = "distpro-process"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class ProcessFileError(DistProError, ValueError):
    """A process file is malformed, inconsistent or does not fit the module."""


def _reject_constant(name: str) -> float:
    raise ProcessFileError(f"non-finite number {name} in process file")


def _is_finite(value: float) -> bool:
    """``math.isfinite`` that also answers (False) for integers too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ProcessFileError(msg)


def check_number(value: Any, what: str, integer: bool = False) -> None:
    """A finite number (an ``int`` if ``integer``); JSON ``true``/``false`` are refused, though
    Python counts them as integers."""
    require(
        not isinstance(value, bool),
        f"{what} must be a number, not the boolean {str(value).lower()}",
    )
    if integer:
        require(isinstance(value, int), f"{what} must be an integer, got {value!r}")
    require(
        isinstance(value, int | float) and _is_finite(value),
        f"{what} must be a finite number, got {value!r}",
    )


def _str_list(data: Mapping[str, Any], key: str, required: bool = False) -> list[str] | None:
    value = data.get(key)
    if value is None:
        require(not required, f"field {key!r} is missing")
        return None
    require(
        isinstance(value, list) and all(isinstance(v, str) for v in value),
        f"field {key!r} must be a list of strings",
    )
    return list(value)


def checked_normalization(normalization: Mapping[str, Any]) -> dict[str, Any]:
    norm = dict(normalization)
    require("name" in norm, "normalization needs a 'name'")
    try:
        check_normalization(norm["name"])
    except ValueError as exc:
        raise ProcessFileError(str(exc)) from None
    norm.setdefault("bias", 1.0)
    norm.setdefault("scale", 1.0)
    for key in ("bias", "scale"):
        check_number(norm[key], f"normalization {key!r}")
    require(
        norm["scale"] > 0,
        f"normalization 'scale' must be > 0 (weights are normalize(logits) * scale), got "
        f"{norm['scale']!r}",
    )
    return norm


def check_record(prune_threshold: Any, steps_per_epoch: Any, run_id: Any) -> None:
    if prune_threshold is not None:
        check_number(prune_threshold, "'prune_threshold'")
    if steps_per_epoch is not None:
        check_number(steps_per_epoch, "'steps_per_epoch'", integer=True)
        require(steps_per_epoch > 0, f"'steps_per_epoch' must be > 0, got {steps_per_epoch}")
    require(
        run_id is None or (isinstance(run_id, str) and run_id.strip() != ""),
        f"'run_id' must be a non-empty string or null, got {run_id!r}",
    )


def checked_skipped(steps: Any, num_rows: int) -> list[int]:
    require(isinstance(steps, list | tuple), f"'skipped_steps' must be a list, got {steps!r}")
    for s in steps:
        check_number(s, "'skipped_steps' entry", integer=True)
    bad = [s for s in steps if not 0 <= s < num_rows]
    require(not bad, f"'skipped_steps' {bad} are not row indices (there are {num_rows} rows)")
    require(
        all(a < b for a, b in zip(steps, steps[1:])),
        f"'skipped_steps' must be strictly increasing, got {list(steps)}",
    )
    return [int(s) for s in steps]


#: The provenance's objects the library reads back, and the types of their fields it reads.
PROVENANCE_FIELDS: dict[str, dict[str, str]] = {
    "run_settings": {
        "warmup_steps": "int",
        "search_every_n_steps": "int",
        "held_out_seed": "int",
        "val_batches_per_step": "int",
        "max_non_finite_steps": "int",
        "proxy": "bool",
    },
    "search_size": {"planned_steps": "int", "max_epochs": "int", "train_samples": "int"},
    "diagnostics": {"every_n_steps": "int", "rows": "list"},
    "demo_settings": {},
}
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "bool": (bool,), "list": (list,)}
#: The smallest value of the provenance's integers the library computes with
#: (`DistillationProcess.searched_steps`: every ``search_every_n_steps``-th row after the warm-up).
PROVENANCE_MINIMA: dict[tuple[str, str], int] = {
    ("run_settings", "warmup_steps"): 0,
    ("run_settings", "search_every_n_steps"): 1,
}


def check_provenance(prov: Mapping[str, Any]) -> None:
    """Type-check the provenance entries the library reads back (`PROVENANCE_FIELDS`, a
    number ``kd_temperature`` and ``search_val_loss``): a hand-edited ``"proxy": "false"``
    is a string, and a string is truthy. ``null`` stands for "not recorded"."""
    for key, spec in PROVENANCE_FIELDS.items():
        value = prov.get(key)
        require(
            value is None or isinstance(value, dict),
            f"provenance.{key} must be an object, got {value!r}",
        )
        for name, kind in spec.items():
            item = (value or {}).get(name)
            ok = item is None or (
                isinstance(item, _TYPES[kind]) and (kind == "bool") == isinstance(item, bool)
            )
            shown = {"bool": "true or false", "int": "an integer", "list": "a list"}[kind]
            require(ok, f"provenance.{key}.{name} must be {shown}, got {item!r}")
            least = PROVENANCE_MINIMA.get((key, name))
            require(
                item is None or least is None or item >= least,
                f"provenance.{key}.{name} must be >= {least}, got {item!r}",
            )
    for key in ("kd_temperature", "search_val_loss"):
        if prov.get(key) is not None:
            check_number(prov[key], f"provenance.{key}")


def parse_process_dict(data: Any) -> dict[str, Any]:
    """Validate a decoded process file; the keyword arguments of ``DistillationProcess``
    (which validates the rest: normalisation, record fields, skipped steps)."""
    require(isinstance(data, dict), "the file does not hold a JSON object")
    require(
        data.get("format") == FORMAT_NAME,
        f"not a DistPro process file (format {data.get('format')!r}, expected {FORMAT_NAME!r})",
    )
    version = data.get("version")
    if version is not None:
        check_number(version, "'version'")
    require(
        isinstance(version, int) and version in READABLE_VERSIONS,
        f"unsupported process file version {version!r}; this library reads versions "
        f"{', '.join(map(str, READABLE_VERSIONS))}",
    )
    new = [k for k in ("run_id", "skipped_steps") if k in data]
    require(
        version >= 2 or not new,
        f"fields {new} are new in version 2 but the file says version {version}",
    )
    names = _str_list(data, "pathway_names", required=True)
    logits = data.get("logits")
    require(isinstance(logits, list), "field 'logits' must be a list of rows")
    require(len(logits) > 0, "field 'logits' has no rows")
    for t, row in enumerate(logits):
        require(
            isinstance(row, list) and len(row) == len(names),
            f"logits row {t} has {len(row) if isinstance(row, list) else 'no'} values but "
            f"there are {len(names)} pathway names",
        )
        require(
            all(isinstance(v, int | float) and not isinstance(v, bool) for v in row),
            f"logits row {t} holds non-numbers",
        )
        require(all(_is_finite(v) for v in row), f"logits row {t} holds non-finite values")
    norm = data.get("normalization")
    require(isinstance(norm, dict), "field 'normalization' must be an object")
    prov = data.get("provenance", {})
    require(isinstance(prov, dict), "'provenance' must be an object")
    check_provenance(prov)
    skipped = data.get("skipped_steps")
    return {
        "pathway_names": names,
        "normalization": norm,
        "logits": logits,
        "teacher_taps": _str_list(data, "teacher_taps"),
        "student_taps": _str_list(data, "student_taps"),
        "transform_kinds": _str_list(data, "transform_kinds"),
        "prune_threshold": data.get("prune_threshold"),
        "steps_per_epoch": data.get("steps_per_epoch"),
        "provenance": prov,
        "run_id": data.get("run_id"),
        "skipped_steps": skipped if skipped is not None else [],
    }


def json_safe(value: Any, where: str = "provenance") -> tuple[Any, list[str]]:
    """``value`` as strict JSON values, and the keys (dotted) of what had to change: a
    non-finite float becomes ``null``, a value JSON cannot hold its ``str``. The provenance
    describes the rows; it must never keep them from being written."""
    changed: list[str] = []
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            out[str(k)], inner = json_safe(v, f"{where}.{k}")
            changed += inner
        return out, changed
    if isinstance(value, list | tuple):
        items = [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [c for _, inner in items for c in inner]
    if isinstance(value, float) and not math.isfinite(value):
        return None, [where]
    if value is None or isinstance(value, str | int | float | bool):
        return value, []
    return str(value), [where]


def read_process_json(path: Path) -> Any:
    """The decoded JSON of ``path``; NaN/Infinity and undecodable text are refused."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except ProcessFileError as exc:
        raise ProcessFileError(f"{path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProcessFileError(f"{path}: not valid JSON (truncated or corrupted?): {exc}") from None
