"""Transfer of a process to a module with other pathways (paper Table 3)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .process import ProcessFileError

if TYPE_CHECKING:
    from .process import DistillationProcess


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


def warm_start(module: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Start ``module.alpha_logits`` from the last row of the process file at ``path`` (a
    second search pass from the first pass's alpha_T); returns what the new process's
    provenance records of it. The pathways must be the module's, in the same order."""
    import torch

    from .process import DistillationProcess

    source = DistillationProcess.load(path)
    if list(source.pathway_names) != list(module.pathway_names):
        raise ProcessFileError(
            f"init_process {str(path)!r} has other pathways than the module: "
            f"{source.pathway_names} vs {module.pathway_names}. Warm-start from a process "
            "searched on the same search space."
        )
    with torch.no_grad():
        module.alpha_logits.copy_(source.final().to(module.alpha_logits.device))
    return {"path": str(path), "fingerprint": source.fingerprint(), "rows": len(source)}
