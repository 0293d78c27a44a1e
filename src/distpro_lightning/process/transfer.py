"""Transfer of a process to a module with other pathways (paper Table 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from distpro_lightning.process.format import ProcessFileError

if TYPE_CHECKING:
    from distpro_lightning.process.core import DistillationProcess


def remap_process(
    process: DistillationProcess,
    target_names: Sequence[str],
    pathway_map: Mapping[str, str] | str | None = None,
) -> DistillationProcess:
    """``process`` with its columns arranged for a module whose pathways are
    ``target_names`` (see `DistillationProcess.remap`)."""
    target_names = list(target_names)
    if pathway_map is None:
        if target_names == process.pathway_names:
            return process
        missing = [n for n in target_names if n not in process.pathway_names]
        extra = [n for n in process.pathway_names if n not in target_names]
        if not missing and not extra:
            index = [process.pathway_names.index(n) for n in target_names]
            return process.like(target_names, process.logits[:, index])
        raise ProcessFileError(
            "The process does not match the module's pathways. Missing from the process: "
            f"{missing}. Extra in the process: {extra}. Pass pathway_map (a dict from the "
            "module's names to the process's names) or pathway_map='position' to transfer."
        )
    if pathway_map == "position":
        if len(target_names) != process.num_pathways:
            raise ProcessFileError(
                f"pathway_map='position' needs the same number of pathways: the module has "
                f"{len(target_names)}, the process {process.num_pathways}"
            )
        return process.like(target_names, process.logits)
    if isinstance(pathway_map, str):
        raise ProcessFileError(f"pathway_map must be a mapping or 'position', got {pathway_map!r}")
    unmapped = [n for n in target_names if n not in pathway_map]
    unknown = sorted({v for v in pathway_map.values() if v not in process.pathway_names})
    if unmapped or unknown:
        raise ProcessFileError(
            f"pathway_map does not cover the module: module pathways without a mapping: "
            f"{unmapped}; mapped-to names not in the process: {unknown}. Process pathways: "
            f"{process.pathway_names}."
        )
    index = [process.pathway_names.index(pathway_map[n]) for n in target_names]
    return process.like(target_names, process.logits[:, index])
