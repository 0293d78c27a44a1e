"""The results file of a comparison, across versions: `upgrade` brings a file written by an
earlier version to the current one in memory, `adopt_processes` renames its process files
once a resume is accepted, so that no finished run is lost to a format change.

Version 2 (distpro-lightning 0.3): several searches per recipe (``search_seeds``); a search
is keyed ``search:<recipe>:s<seed>`` and its process is ``process_<recipe>_s<seed>.json``,
a replay's run key ends in ``:s<seed>``. Version 1 (0.2): one search per recipe
(``search_seed``), keyed ``search:<recipe>``, its process ``process_<recipe>.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from distpro_lightning.compare.settings import REPLAYS

VERSION = 2

#: The fields of every record that the plan and the report read, and those of a run's.
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "key": (str,), "method": (str,), "seed": (int,), "wall_s": (int, float),
}  # fmt: skip
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "params": (dict,), "top1": (int, float), "val_top1": (int, float),
}  # fmt: skip


def read_results(path: Path) -> dict[str, Any]:
    """The results file at ``path``, checked (`check_records`) and upgraded in memory: a
    damaged or hand-edited file is refused naming the file, the record and the field."""
    try:
        payload = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"compare: {path} is not valid JSON (truncated or edited?): {exc}. Restore it, or "
            "give another compare.results file."
        ) from None
    if not isinstance(payload, dict) or "records" not in payload:
        raise ValueError(
            f"compare: {path} is not a results file of distpro compare (it has no records)."
        )
    check_records(payload["records"], path)
    return upgrade(payload)


def check_records(records: Any, path: Path) -> None:
    """Refuse records that are not a list of objects with the fields the plan and the
    report read, of their types (a number that is not a bool, finite)."""
    if not isinstance(records, list):
        raise ValueError(f"compare: {path}: 'records' must be a list, got {records!r:.80}.")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"compare: {path}: record {i} is not an object: {record!r:.80}.")
        kind = record.get("kind")
        fields = {**RECORD_FIELDS, **(RUN_FIELDS if kind == "run" else {})}
        for name, types in fields.items():
            value = record.get(name)
            ok = isinstance(value, types) and not isinstance(value, bool)
            if ok and isinstance(value, float):
                ok = math.isfinite(value)
            if not ok or (name == "kind" and value not in ("run", "search")):
                want = "run or search" if name == "kind" else "/".join(t.__name__ for t in types)
                raise ValueError(
                    f"compare: {path}: record {i} ({record.get('key', 'no key')}) has "
                    f"{name}={value!r}, not {want}: the file was damaged or edited. Restore "
                    "it, or remove that record to run it again."
                )


def upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` at `VERSION`, in memory (changed in place and returned; the file and
    its processes are left as they are: `adopt_processes` renames those, under the
    comparison's lock, once a resume is accepted). A file of a later version than this
    library knows is refused."""
    version = payload.get("version", 1)
    if version > VERSION:
        raise ValueError(
            f"compare: the results file is of version {version}, newer than this "
            f"distpro-lightning reads ({VERSION}): upgrade distpro-lightning to resume it."
        )
    if version == 1:
        _from_v1(payload)
    payload["version"] = VERSION
    return payload


def _from_v1(payload: dict[str, Any]) -> None:
    settings = [payload.get("settings", {}).get("compare"), payload.get("effective")]
    seed = 100
    for given in [s for s in settings if isinstance(s, dict)]:
        if "search_seed" in given:
            seed = int(given.pop("search_seed"))
            given["search_seeds"] = [seed]
    for record in payload.get("records", []):
        if record["kind"] == "search" and record["key"] == f"search:{record['method']}":
            record.update(key=f"{record['key']}:s{seed}", search_seed=seed)
            record["v1_process"] = f"process_{record['method']}.json"
            record["process"] = f"process_{record['method']}_s{seed}.json"
        elif (
            record["kind"] == "run" and record["method"] in REPLAYS and "search_seed" not in record
        ):
            record.update(key=f"{record['key']}:s{seed}", search_seed=seed)


def adopt_processes(payload: dict[str, Any], folder: Path) -> None:
    """Rename the processes of searches upgraded from version 1 to their version-2 names
    in ``folder`` (called under the comparison's lock, after its settings were accepted;
    the caller saves the payload next). Refused when both names exist and differ."""
    for record in payload.get("records", []):
        old_name = record.pop("v1_process", None)
        if old_name is None:
            continue
        old, new = folder / old_name, folder / record["process"]
        if old.is_file() and new.is_file() and old.read_bytes() != new.read_bytes():
            record["v1_process"] = old_name
            raise ValueError(
                f"compare: {old} (version 1) and {new} both exist and differ; keep the one "
                f"that {record['key']} searched (see its fingerprint) and remove the other."
            )
        if old.is_file():
            os.replace(old, new)
