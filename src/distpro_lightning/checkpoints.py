"""Safe loading of trained models: Lightning checkpoints or plain state-dict files.

Nothing is unpickled: every load uses ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint or state-dict file with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"Could not load {str(path)!r} safely (weights_only=True): {exc}. Only Lightning "
            "checkpoints and state-dict files of tensors and plain values are accepted."
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict.")
    return obj


def extract_model_state(obj: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model's tensors from a Lightning checkpoint (keys under ``prefix``) or a state dict."""
    state = obj.get("state_dict", obj)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], prefix: str = "model."
) -> nn.Module:
    """Load weights from ``path`` into ``model``; a clear error lists missing/unexpected keys."""
    state = extract_model_state(load_state_file(path), prefix)
    own = model.state_dict()
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

    ``path`` is a Lightning checkpoint of :class:`~distpro_lightning.ClassifierModule` (its
    hyper-parameters name the architecture, so ``model`` may be omitted) or a state-dict
    file (then ``model`` is an ``nn.Module`` or a registry name). Loaded with
    ``weights_only=True``.
    """
    from .models import create

    obj = load_state_file(path)
    hparams = (
        obj.get("hyper_parameters", {}) if isinstance(obj.get("hyper_parameters"), dict) else {}
    )
    if model is None:
        model = hparams.get("model")
        if not isinstance(model, str):
            raise ValueError(
                f"{str(path)!r} does not name its architecture (no 'model' hyper-parameter): pass "
                "the teacher architecture explicitly (an nn.Module or a model registry name)."
            )
    if isinstance(model, str):
        model = create(
            model,
            num_classes=int(num_classes or hparams.get("num_classes", 10)),
            in_channels=int(in_channels or hparams.get("in_channels", 3)),
        )
    return load_weights(model, path)
