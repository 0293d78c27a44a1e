"""The trained student on its own: `export_student` writes it from a distilling module,
`load_student` reads it back, from that file or from a Lightning checkpoint of the
module, without the teacher (nothing is unpickled: ``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distpro_lightning.files import atomic_write
from distpro_lightning.modules.checkpoints import CheckpointError, load_state_file
from distpro_lightning.pathways.taps import unwrap_model

#: The ``format`` entry of an exported student file.
STUDENT_FORMAT = "distpro-student"

#: The files `load_student` reads, as its errors name them.
STUDENT_FILES = (
    "a student file written by export_student() or a Lightning checkpoint (.ckpt) of a "
    "DistPro module"
)


def export_student(module: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``module.student``'s weights to ``path`` (atomically) with what rebuilds it:
    the registry name (``hparams.student`` when it was built by name), ``num_classes`` and
    ``in_channels``. Returns the path.

    An existing file at ``path`` (an earlier export, a teacher checkpoint, a process file)
    is refused unless ``overwrite=True``, as every writer of the library does."""
    out = check_export_path(path, overwrite)
    student = unwrap_model(module.student)
    hparams = dict(getattr(module, "hparams", {}) or {})
    architecture = hparams.get("student") if isinstance(hparams.get("student"), str) else None
    payload = {
        "format": STUDENT_FORMAT,
        "version": 1,
        "architecture": architecture,
        "class_name": type(student).__name__,
        "num_classes": hparams.get("num_classes"),
        "in_channels": hparams.get("in_channels"),
        "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()},
    }
    return atomic_write(out, lambda fh: torch.save(payload, fh))


def check_export_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """The export's file path, refused (with the fix) when it is empty, a folder, or an
    existing file that ``overwrite`` does not allow replacing; ``overwrite`` must be a bool
    (``overwrite="no"`` is truthy)."""
    if not isinstance(overwrite, bool):
        raise TypeError(
            f"export_student(overwrite=...) takes True or False, got {type(overwrite).__name__} "
            f"{overwrite!r}."
        )
    if not str(path).strip():
        raise ValueError("export_student needs a file path, e.g. 'student.pt'; got ''.")
    out = Path(path).expanduser()
    if out.is_dir():
        raise IsADirectoryError(
            f"export_student: {str(out)!r} is a folder; give a file path inside it, e.g. "
            f"{str(out / 'student.pt')!r}."
        )
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"export_student: {str(out)!r} exists and is not replaced (it may be a "
            "checkpoint, a process file or an earlier export). Choose another path, or pass "
            "overwrite=True to replace it."
        )
    return out


def _state_dict_of(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's ``state_dict`` entry, refused (naming the file) when it has none."""
    state = obj.get("state_dict")
    if isinstance(state, dict):
        return state
    if "state_dict" in obj:
        kind = f"a 'state_dict' entry that is a {type(state).__name__}, not a dict"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = "a bare state dict (load it with model.load_state_dict(torch.load(path)))"
    else:
        kind = f"a dict without a 'state_dict' entry (keys {sorted(map(str, obj))[:6]})"
    raise CheckpointError(f"{str(path)!r} holds {kind}; load_student reads {STUDENT_FILES}.")


def _student_state(
    obj: dict[str, Any], prefix: str, path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, description)`` of an export file or a Lightning checkpoint."""
    state = _state_dict_of(obj, path)
    if obj.get("format") == STUDENT_FORMAT:
        return dict(state), obj
    hparams = obj.get("hyper_parameters") if isinstance(obj.get("hyper_parameters"), dict) else {}
    group = hparams.get("distillation") if isinstance(hparams.get("distillation"), dict) else {}
    prefix = f"{hparams.get('student_attribute') or group.get('student_attribute') or prefix}."
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not found:
        raise CheckpointError(
            f"No student weights (keys under {prefix!r}) in {str(path)!r}: give {STUDENT_FILES} "
            "(prefix: the student's attribute, e.g. prefix='net')."
        )
    arch = hparams.get("student") if isinstance(hparams.get("student"), str) else None
    description = {
        "architecture": arch,
        "num_classes": hparams.get("num_classes"),
        "in_channels": hparams.get("in_channels"),
    }
    return found, description


def load_student(
    path: str | os.PathLike[str], model: nn.Module | None = None, prefix: str = "student"
) -> nn.Module:
    """The trained student from ``path``: a file of `export_student` or a Lightning
    checkpoint of a DistPro module (its ``prefix.*`` weights; the teacher is not needed).

    Args:
        path: the file.
        model: the (untrained) student architecture to load into; ``None``: built from the
            registry name the file records (modules built by name).
        prefix: the student's attribute in a checkpoint (``student_attribute``).

    Raises:
        CheckpointError: the file holds no student weights, or they do not fit ``model``.
        ValueError: ``model`` is ``None`` and the file names no registry architecture.
    """
    state, desc = _student_state(load_state_file(path, STUDENT_FILES), prefix, Path(path))
    if model is None:
        from distpro_lightning.models import create

        arch = desc.get("architecture")
        if not isinstance(arch, str):
            raise ValueError(
                f"{str(path)!r} does not name a registry architecture (the student was given "
                f"as a module, {desc.get('class_name', 'unknown class')}): pass "
                "model=YourNet(...) to load the weights into."
            )
        model = create(
            arch,
            num_classes=int(desc.get("num_classes") or 10),
            in_channels=int(desc.get("in_channels") or 3),
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"The student weights in {str(path)!r} do not fit {type(model).__name__}: missing "
            f"{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}."
        )
    return model.eval()
