"""The frozen teacher of a distilling module, written once for every method: built from a
module, a checkpoint path or a registry name; run in eval mode without grad with its
feature taps; kept out of the owner's checkpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoints import load_teacher
from .contract import TeacherOutput
from .taps import FeatureTaps

log = logging.getLogger(__name__)

#: The owner's attribute that holds the teacher model (its state-dict prefix).
TEACHER_ATTRIBUTE = "teacher"


def build_teacher(
    teacher: nn.Module | str,
    num_classes: int,
    in_channels: int,
    architecture: nn.Module | str | None = None,
) -> nn.Module:
    """The teacher model: ``teacher`` itself if it is a module; loaded from a checkpoint or
    state-dict file if it is a path (``architecture``, a registry name or an untrained
    module, is the model of a checkpoint that does not name one); else built by registry name, untrained (with a warning)."""
    from .models import create

    if isinstance(teacher, nn.Module):
        return teacher
    if os.path.isfile(teacher):
        return load_teacher(teacher, architecture, num_classes, in_channels)
    log.warning("DistPro: teacher %r built by name is untrained.", teacher)
    return create(teacher, num_classes=num_classes, in_channels=in_channels)


class FrozenTeacher:
    """A teacher that never trains: no gradients, eval mode for every forward (its mode is
    restored afterwards, so Lightning's train/eval bookkeeping never sees it changed), its
    tapped features returned with its logits.

    `attach` makes it the ``teacher`` submodule of a LightningModule and keeps its
    weights out of that module's ``state_dict`` (unless ``in_checkpoints``); loading a
    checkpoint without them fills them from the live teacher.

    Args:
        model: the teacher network (its parameters are set to ``requires_grad=False``).
        taps: dotted names of the tapped submodules (may be empty).
        in_checkpoints: keep the teacher's weights in the owner's checkpoints.
    """

    def __init__(
        self, model: nn.Module, taps: Sequence[str] = (), in_checkpoints: bool = False
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(model).__name__}.")
        self.model = model.requires_grad_(False)
        self.taps = FeatureTaps(model, list(taps), "teacher")
        self.in_checkpoints = in_checkpoints

    def attach(self, owner: nn.Module) -> None:
        """Register the model as ``owner.teacher`` and its checkpoint hooks on ``owner``."""
        setattr(owner, TEACHER_ATTRIBUTE, self.model)
        owner.register_state_dict_post_hook(_drop_teacher_state)
        owner.register_load_state_dict_pre_hook(_fill_teacher_state)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> TeacherOutput:
        """The teacher's logits and tapped features of ``x`` (eval mode, no grad)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.taps.capture() as store:
                logits = self.model(x)
        finally:
            if was_training:
                self.model.train()
        return TeacherOutput(logits, self.taps.ordered(store))


def _frozen_of(owner: nn.Module) -> FrozenTeacher | None:
    frozen = getattr(owner, "frozen_teacher", None)
    return frozen if isinstance(frozen, FrozenTeacher) else None


def _drop_teacher_state(
    owner: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    frozen = _frozen_of(owner)
    if frozen is None or frozen.in_checkpoints:
        return
    for key in [k for k in state_dict if k.startswith(f"{prefix}{TEACHER_ATTRIBUTE}.")]:
        del state_dict[key]


def _fill_teacher_state(
    owner: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    frozen = _frozen_of(owner)
    if frozen is None:
        return
    for key, value in frozen.model.state_dict().items():
        state_dict.setdefault(f"{prefix}{TEACHER_ATTRIBUTE}.{key}", value)
