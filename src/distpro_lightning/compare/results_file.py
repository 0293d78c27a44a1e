"""The results file of a comparison, across versions: `upgrade` brings a file written by an
earlier version to the current one in memory, `adopt_processes` renames its process files
once a resume is accepted, so that no finished run is lost to a format change.

Version 2 (distpro-lightning 0.3): several searches per recipe (``search_seeds``); a search
is keyed ``search:<recipe>:s<seed>`` and its process is ``process_<recipe>_s<seed>.json``,
a replay's run key ends in ``:s<seed>``. Version 1 (0.2): one search per recipe
(``search_seed``), keyed ``search:<recipe>``, its process ``process_<recipe>.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distpro_lightning.compare.settings import REPLAYS

VERSION = 2


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
