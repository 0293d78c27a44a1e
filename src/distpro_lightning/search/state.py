"""The checkpoint state of a search (`ProcessSearchCallback`'s
``state_dict``) and its restoration on resume, settings changes included."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from distpro_lightning.modules.contract import SearchableModule
from distpro_lightning.modules.run_length import planned_steps
from distpro_lightning.process.core import DistillationProcess, ProcessFileError
from distpro_lightning.search.heldout import HeldOutStream
from distpro_lightning.search.output import search_provenance, settings_record
from distpro_lightning.search.paths import new_run_id
from distpro_lightning.search.step import SearchStep


def search_state(
    process: DistillationProcess, step: SearchStep, held_out: HeldOutStream
) -> dict[str, Any]:
    """What a checkpoint keeps of a search: the rows, their skipped marks, the run id, the
    provenance, the settings, the logits optimizer and the held-out position."""
    return {
        **step.state_dict(),
        **held_out.state_dict(),
        "logits": process.logits,
        "pathway_names": list(process.pathway_names),
        "run_id": process.run_id,
        "skipped_steps": process.skipped_steps,
        "provenance": json.loads(json.dumps(process.provenance, default=str)),  # plain values
        "settings": settings_record(step.requested),
    }


def warm_start_new_search(
    module: SearchableModule, init_process: str | None, resuming: bool
) -> dict[str, Any] | None:
    """Start a new search's logits from ``init_process``'s last row (before the search
    step copies them); a resume keeps the checkpoint's logits instead, with a warning.
    Returns the record of the warm start (``None``: none)."""
    if init_process is None:
        return None
    if resuming:
        rank_zero_warn(
            f"ProcessSearchCallback(init_process={init_process!r}) is not applied: this fit "
            "resumes a checkpoint, whose logits continue the search."
        )
        return None
    return warm_start(module, init_process)


def start_process(
    trainer: pl.Trainer,
    module: SearchableModule,
    parts: tuple[SearchStep, HeldOutStream],
    pending: Mapping[str, Any] | None,
    warm: Mapping[str, Any] | None,
) -> DistillationProcess:
    """The process of this fit: a new one with a new run id and the provenance of the
    requested settings (``warm``: the warm start's record), or, with the checkpoint state
    ``pending``, the checkpoint's continued (`restore_search`)."""
    step, held_out = parts
    fresh = search_provenance(trainer, module, step.requested)
    if pending is None:
        process = module.new_process(fresh)
        if warm is not None:
            process.provenance["init_process"] = dict(warm)
    else:
        process = restore_search(pending, module, step, held_out, fresh)
    if process.run_id is None:  # a new process, or a checkpoint of 0.1
        process.run_id = trainer.strategy.broadcast(new_run_id())
    return process


def restore_search(
    state: Mapping[str, Any],
    module: SearchableModule,
    step: SearchStep,
    held_out: HeldOutStream,
    fresh_provenance: Mapping[str, Any],
) -> DistillationProcess:
    """The checkpoint's process (rows, skipped steps, run id, provenance), with ``step``'s
    and ``held_out``'s state restored and ``step``'s settings applied: a change of settings
    gives a warning and is recorded in the provenance (``settings_changes``; the
    ``search_settings``, ``hypergradient`` and ``alpha_lr`` entries show the settings now in
    force). ``fresh_provenance`` serves checkpoints without one."""
    if list(state["pathway_names"]) != list(module.pathway_names):
        raise RuntimeError(
            "The checkpoint's search state belongs to different pathways: "
            f"{state['pathway_names']} vs {module.pathway_names}."
        )
    provenance = dict(state.get("provenance") or fresh_provenance)
    if "provenance" not in state and state.get("provenance_created"):
        provenance["created"] = state["provenance_created"]  # checkpoints of 0.1
    process = module.new_process(provenance)
    process.run_id = state.get("run_id")
    skipped = set(state.get("skipped_steps", ()))
    for i, row in enumerate(state["logits"]):
        process.append(row, skipped=i in skipped)
    loaded = step.load_state_dict(state)
    held_out.load_state_dict(state)
    now = settings_record(step.requested)
    changes = settings_changes(state.get("settings"), now)
    if not loaded and "alpha_optimizer" not in changes:
        kind = now["alpha_optimizer"]
        changes["alpha_optimizer"] = ["sgd" if kind == "adam" else "adam", kind]
    if changes:
        warn_settings_changed(changes, len(process), moments_reset=not loaded)
        history = list(process.provenance.get("settings_changes", []))
        entry = {"step": len(process), "changed": changes}
        process.provenance["settings_changes"] = [*history, entry]
    process.provenance.update(
        search_settings=now, hypergradient=now["hypergradient"], alpha_lr=now["alpha_lr"]
    )
    return process


def settings_changes(saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> dict[str, list]:
    """``{name: [checkpoint's value, this run's value]}`` for the settings a resume changes."""
    if not saved:
        return {}
    return {k: [saved[k], v] for k, v in now.items() if k in saved and saved[k] != v}


def warn_settings_changed(changes: Mapping[str, list], step: int, moments_reset: bool) -> None:
    """The warning of a resume that applies other search settings."""
    listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    reset = (
        " The logits optimizer changed, so its state (Adam moments or momentum) starts afresh."
        if moments_reset
        else ""
    )
    rank_zero_warn(
        f"Resuming the search at step {step} with other settings than the checkpoint's "
        f"({listed}); the new settings apply from here on and the process provenance records "
        f"the change (settings_changes).{reset} To continue unchanged, resume with the "
        "checkpoint's settings."
    )


def warm_start(module: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Start ``module.alpha_logits`` from the last row of the process file at ``path`` (a
    second search pass from the first pass's alpha_T); returns what the new process's
    provenance records of it (the path, the fingerprint of the file's process with its
    columns in the module's order, its row count). The file must hold the module's pathways,
    in any order: its columns are matched to the module's by pathway name
    (`DistillationProcess.remap`). Other pathways, or another weighting (normalization,
    bias, scale), raise `ProcessFileError`."""
    source = DistillationProcess.load(path)
    if sorted(source.pathway_names) != sorted(module.pathway_names):
        raise ProcessFileError(
            f"init_process {str(path)!r} has other pathways than the module: "
            f"{source.pathway_names} vs {module.pathway_names}. Warm-start from a process "
            "searched on the same search space."
        )
    source = source.remap(module.pathway_names)  # the same pathways, in the module's order
    norm = source.normalization
    ours = {
        "name": module.normalization,
        "bias": float(module.normalization_bias),
        "scale": float(module.weight_scale),
    }
    if module.normalization != "biased_softmax":
        del ours["bias"]  # only the biased softmax has a bias
    differ = [
        f"{k} {norm.get(k)!r} there, {v!r} here"
        for k, v in ours.items()
        if (norm.get(k) != v if k == "name" else not math.isclose(float(norm.get(k, 0)), v))
    ]
    if differ:
        raise ProcessFileError(
            f"init_process {str(path)!r} was searched with another weighting ({'; '.join(differ)}"
            "): its logits would give other weights here, so the warm start would not start "
            "from its alpha_T. Configure the module's normalization, normalization_bias, "
            "kd_weight and scale_by_num_pathways as in that search."
        )
    with torch.no_grad():
        module.alpha_logits.copy_(source.final().to(module.alpha_logits.device))
    return {"path": str(path), "fingerprint": source.fingerprint(), "rows": len(source)}


def record_run_settings(process: DistillationProcess, now: Mapping[str, Any]) -> None:
    """Record the search's run settings (`SearchRunOptions.record`) in the provenance; a
    resume with other values warns, names them, applies them and appends the change to
    ``settings_changes``."""
    before = process.provenance.get("run_settings")
    process.provenance["run_settings"] = dict(now)
    if not isinstance(before, Mapping):
        return
    changed = {k: [before.get(k), v] for k, v in now.items() if before.get(k) != v}
    if changed:
        rank_zero_warn(
            f"DistPro search resumed with other settings than it was searched with: "
            f"{', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changed.items())}. They apply "
            "from here on and are recorded in the provenance (settings_changes)."
        )
        process.provenance.setdefault("settings_changes", []).append(
            {"step": len(process), "changed": changed}
        )


def record_search_size(process: DistillationProcess, trainer: pl.Trainer) -> None:
    """The search run's size in the provenance (``search_size``: its planned optimizer
    steps, epochs and training samples), so a replay knows how far it stretches it; a
    resumed fit records its own plan (a resume may run longer than the first fit)."""
    loader = getattr(trainer, "train_dataloader", None)
    dataset = getattr(loader, "dataset", None)
    try:
        samples = len(dataset) if dataset is not None else None
    except TypeError:
        samples = None
    process.provenance["search_size"] = {
        "planned_steps": planned_steps(trainer),
        "max_epochs": trainer.max_epochs,
        "train_samples": samples,
    }
