"""Transfer of a process to a module with other pathways (paper Table 3): which column of
the process each of the module's pathways takes. Pure: names in, column indices out;
`DistillationProcess.remap` applies them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from distpro_lightning.grouping import did_you_mean
from distpro_lightning.process.format import ProcessFileError


def remap_columns(
    source_names: Sequence[str],
    target_names: Sequence[str],
    pathway_map: Mapping[str, str] | str | None = None,
) -> list[int]:
    """For each of ``target_names`` (the module's pathways), the index of the column of a
    process whose pathways are ``source_names`` that it takes: by name (``None``: the same
    names in any order), by ``pathway_map`` (module name -> process name) or by position
    (``"position"``: the same number of pathways). A mismatch raises `ProcessFileError`
    naming what is missing and the fix."""
    source, target = list(source_names), list(target_names)
    if pathway_map is None:
        missing = [n for n in target if n not in source]
        extra = [n for n in source if n not in target]
        if not missing and not extra:
            return [source.index(n) for n in target]
        raise ProcessFileError(
            "The process does not match the module's pathways. Missing from the process: "
            f"{missing}. Extra in the process: {extra}. Pass pathway_map (a dict from the "
            "module's names to the process's names) or pathway_map='position' to transfer."
        )
    if pathway_map == "position":
        if len(target) != len(source):
            raise ProcessFileError(
                f"pathway_map='position' needs the same number of pathways: the module has "
                f"{len(target)}, the process {len(source)}"
            )
        return list(range(len(target)))
    if isinstance(pathway_map, str):
        raise ProcessFileError(f"pathway_map must be a mapping or 'position', got {pathway_map!r}")
    stray = sorted(k for k in pathway_map if k not in target)
    if stray:
        shown = ", ".join(f"{k!r}{did_you_mean(k, target)}" for k in stray)
        raise ProcessFileError(
            f"pathway_map has keys that are not pathways of the module: {shown} (its keys are "
            f"the module's pathway names, its values the process's). Module pathways: {target}."
        )
    unmapped = [n for n in target if n not in pathway_map]
    unknown = sorted({v for v in pathway_map.values() if v not in source})
    if unmapped or unknown:
        raise ProcessFileError(
            f"pathway_map does not cover the module: module pathways without a mapping: "
            f"{unmapped}; mapped-to names not in the process: {unknown}. Process pathways: "
            f"{source}."
        )
    return [source.index(pathway_map[n]) for n in target]
