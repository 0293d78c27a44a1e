"""The results file of a comparison, across versions: `upgrade` brings a file written by an
earlier version to the current one, so that no finished run is lost to a format change.

Version 2 (distpro-lightning 0.3): several searches per recipe (``search_seeds``); a search
is keyed ``search:<recipe>:s<seed>`` and its process is ``process_<recipe>_s<seed>.json``,
a replay's run key ends in ``:s<seed>``. Version 1 (0.2): one search per recipe
(``search_seed``), keyed ``search:<recipe>``, its process ``process_<recipe>.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distpro_lightning.compare.settings import REPLAYS

VERSION = 2


def upgrade(payload: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """``payload`` at `VERSION` (changed in place and returned). Given ``folder`` (the
    results' folder), a version-1 process file is renamed to its version-2 name too.
    A file of a later version than this library knows is refused."""
    version = payload.get("version", 1)
    if version > VERSION:
        raise ValueError(
            f"compare: the results file is of version {version}, newer than this "
            f"distpro-lightning reads ({VERSION}): upgrade distpro-lightning to resume it."
        )
    if version == 1:
        _from_v1(payload, folder)
    payload["version"] = VERSION
    return payload


def _from_v1(payload: dict[str, Any], folder: Path | None) -> None:
    settings = [payload.get("settings", {}).get("compare"), payload.get("effective")]
    seed = 100
    for given in [s for s in settings if isinstance(s, dict)]:
        if "search_seed" in given:
            seed = int(given.pop("search_seed"))
            given["search_seeds"] = [seed]
    for record in payload.get("records", []):
        if record["kind"] == "search" and record["key"] == f"search:{record['method']}":
            record.update(key=f"{record['key']}:s{seed}", search_seed=seed)
            old = folder / f"process_{record['method']}.json" if folder else None
            if old is not None and old.is_file():
                old.rename(folder / f"process_{record['method']}_s{seed}.json")
                record["process"] = f"process_{record['method']}_s{seed}.json"
        elif (
            record["kind"] == "run" and record["method"] in REPLAYS and "search_seed" not in record
        ):
            record.update(key=f"{record['key']}:s{seed}", search_seed=seed)
