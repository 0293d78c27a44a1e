"""Safe loading of trained models: Lightning checkpoints or plain state-dict files.

Nothing is unpickled: every load uses ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distpro_lightning.errors import DistProError

log = logging.getLogger(__name__)


class CheckpointError(DistProError, ValueError):
    """A file that is not a checkpoint or state dict this library can load safely, or a
    checkpoint of other pathways than the module it is loaded into."""


_CKPT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".tar")

#: The files `load_state_file` reads, as its errors name them (a caller may name its own).
STATE_FILES = (
    "a Lightning checkpoint (.ckpt) or a state-dict file saved with "
    "torch.save(model.state_dict(), path)"
)


def _not_a_checkpoint(path: Path, exc: BaseException, accepted: str) -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` refused. torch's own message
    (which suggests ``weights_only=False``, i.e. running the file's code) is not passed on."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return CheckpointError(
            f"{str(path)!r} holds a pickled {found.group(1)} object, which is not loaded: this "
            f"library never unpickles code. Give {accepted} (tensors and plain values only)."
        )
    if isinstance(exc, EOFError) or path.stat().st_size == 0:
        reason = "it is empty or truncated"
    elif "PytorchStreamReader" in text or "zip archive" in text:
        reason = "it is a damaged (truncated or corrupted) PyTorch file"
    else:
        reason = "it is not a PyTorch file (damaged, or another kind of file)"
    return CheckpointError(f"{str(path)!r} is not a checkpoint: {reason}. Give {accepted}.")


def load_state_file(path: str | os.PathLike[str], accepted: str = STATE_FILES) -> dict[str, Any]:
    """Load a checkpoint or state-dict file with ``weights_only=True`` (``accepted``: the
    files the caller reads, as its errors name them).

    Raises ``FileNotFoundError`` (no such file), ``IsADirectoryError`` (a directory) or
    `CheckpointError` (not a checkpoint, or one holding objects that would need
    unpickling code)."""
    path = Path(path).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in _CKPT_SUFFIXES)[:5]
        hint = f" Checkpoints in it: {', '.join(inside)}." if inside else ""
        raise IsADirectoryError(
            f"{str(path)!r} is a directory, not a checkpoint file: give the file's path.{hint}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}: the file does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - replaced by a message without torch's advice
        raise _not_a_checkpoint(path, exc, accepted) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict: give {accepted}."
        )
    return obj


def looks_like_path(name: str) -> bool:
    """Whether a model argument is meant as a file path rather than a registry name: it
    has a folder separator (a ``timm/<name>`` excepted, unless such a file exists), starts
    with ``~`` or ``.``, or ends like a checkpoint."""
    from distpro_lightning.models.timm_models import is_timm_name

    if is_timm_name(name) and not Path(name).expanduser().exists():
        return False
    return (
        os.sep in name
        or "/" in name
        or name.startswith(("~", "."))
        or name.lower().endswith(_CKPT_SUFFIXES)
    )


def resolve_teacher(
    teacher: str,
    teacher_model: nn.Module | str | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """A teacher given as a string: a checkpoint file (loaded with `load_teacher`) or
    a registry name (built untrained, with a warning). A string that looks like a path
    (`looks_like_path`) but names no file raises ``FileNotFoundError`` or
    ``IsADirectoryError``, never ``Unknown model``; an unknown name lists the models."""
    from distpro_lightning.models import available_models, create

    path = Path(teacher).expanduser()
    if path.is_file() or path.is_dir() or looks_like_path(teacher):
        if not path.exists():
            raise FileNotFoundError(
                f"Teacher checkpoint {teacher!r} does not exist (looked for {str(path.absolute())!r}). "
                "Check the path; a model name instead is one of: "
                f"{', '.join(available_models())}."
            )
        return load_teacher(path, teacher_model, num_classes, in_channels)
    model = create(teacher, num_classes=num_classes, in_channels=in_channels)
    log.warning("DistPro: teacher %r built by name is untrained.", teacher)
    if teacher_model is not None:
        say_teacher_model_unused(
            teacher_model, repr(teacher), "a model name (the name is the architecture)"
        )
    return model


def say_teacher_model_unused(
    teacher_model: nn.Module | str, teacher: str, why: str, fix: str = ""
) -> None:
    """Warn that ``teacher_model`` (the architecture of a checkpoint file) has no effect
    with this ``teacher`` (``why``: what it is instead)."""
    log.warning(
        "DistPro: teacher_model=%r has no effect with teacher=%s, %s; teacher_model names the "
        "architecture of a checkpoint file.%s",
        teacher_model if isinstance(teacher_model, str) else type(teacher_model).__name__,
        teacher,
        why,
        fix,
    )


def extract_model_state(obj: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model's tensors from a Lightning checkpoint (keys under ``prefix``) or a state dict."""
    state = obj.get("state_dict", obj)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_owner_prefix(
    state: dict[str, torch.Tensor], own: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """A LightningModule checkpoint of the user's own module keeps the network under its
    attribute (``net.``, ``backbone.``): when every key shares one first component and the
    keys without it are the model's, strip it."""
    if set(state) == set(own) or not state:
        return state
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1 and all("." in k for k in state):
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if set(stripped) == set(own):
            return stripped
    return state


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], prefix: str = "model."
) -> nn.Module:
    """Load weights from ``path`` into ``model``; a clear error lists missing/unexpected keys."""
    state = extract_model_state(load_state_file(path), prefix)
    own = model.state_dict()
    state = _strip_owner_prefix(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if mismatched:
            parts.append(
                "shape mismatch for "
                + ", ".join(
                    f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in mismatched[:5]
                )
            )
        raise ValueError(
            f"The weights in {str(path)!r} do not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check that the architecture, num_classes and in_channels match the checkpoint."
        )
    model.load_state_dict(state)
    return model


def load_teacher(
    path: str | os.PathLike[str],
    model: nn.Module | str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build and load a trained model for use as a teacher.

    ``path`` is a Lightning checkpoint of `ClassifierModule` (its
    hyper-parameters name the architecture, so ``model`` may be omitted) or a state-dict
    file (then ``model`` is an ``nn.Module`` or a registry name). Loaded with
    ``weights_only=True``.
    """
    from distpro_lightning.models import create

    obj = load_state_file(path)
    hparams = (
        obj.get("hyper_parameters", {}) if isinstance(obj.get("hyper_parameters"), dict) else {}
    )
    if model is None:
        model = hparams.get("model")
        if not isinstance(model, str):
            raise ValueError(
                f"{str(path)!r} does not name its architecture (no 'model' hyper-parameter): pass "
                "the teacher architecture explicitly: an nn.Module or a model registry name "
                "(teacher_model), in YAML e.g. teacher_model: {class_path: my_pkg.MyNet, "
                "init_args: {...}}."
            )
    if isinstance(model, str):
        model = create(
            model,
            num_classes=int(num_classes or hparams.get("num_classes", 10)),
            in_channels=int(in_channels or hparams.get("in_channels", 3)),
        )
    return load_weights(model, path)
