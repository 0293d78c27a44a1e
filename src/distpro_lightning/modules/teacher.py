"""The frozen teacher of a distilling module, written once for every method: built from a
module, a checkpoint path or a registry name; kept in eval mode and run without grad with
its feature taps; kept out of the owner's checkpoints."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from distpro_lightning.modules.checkpoints import resolve_teacher, say_teacher_model_unused
from distpro_lightning.modules.contract import TeacherOutput
from distpro_lightning.pathways.taps import FeatureTaps, explained_input_errors, unwrap_model

#: The owner's attribute that holds the teacher model (its state-dict prefix).
TEACHER_ATTRIBUTE = "teacher"


def build_teacher(
    teacher: nn.Module | str,
    num_classes: int,
    in_channels: int,
    architecture: nn.Module | str | None = None,
) -> nn.Module:
    """The teacher model: ``teacher`` itself if it is a module; else
    `resolve_teacher`: loaded from a checkpoint or
    state-dict file if it is a path (``architecture`` names the model of a plain state
    dict; a path that names no file says so), else built by registry name, untrained (with
    a warning). An ``architecture`` given with a module teacher has no effect, and says so."""
    if isinstance(teacher, nn.Module):
        if architecture is not None:
            say_teacher_model_unused(
                architecture, type(teacher).__name__,
                "a module (the module is the teacher, weights and all)", " Drop teacher_model.",
            )  # fmt: skip
        return teacher
    return resolve_teacher(teacher, architecture, num_classes, in_channels)


def check_not_shared(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse a teacher that is the student or shares parameters with it: the frozen
    teacher's parameters are set to ``requires_grad=False``, which would freeze the student."""
    if unwrap_model(student) is unwrap_model(teacher):
        raise ValueError(
            "The teacher is the student itself (the same nn.Module): freezing the teacher would "
            "freeze the student. Pass a separate teacher, e.g. a trained copy: "
            "copy.deepcopy(student) loaded with the teacher's weights."
        )
    teacher_ids = {id(p) for p in teacher.parameters()}
    shared = [n for n, p in student.named_parameters() if id(p) in teacher_ids]
    if shared:
        raise ValueError(
            f"The teacher shares parameters with the student ({', '.join(shared[:5])}"
            f"{' ...' if len(shared) > 5 else ''}): freezing the teacher would freeze them. "
            "Give the teacher its own modules (e.g. copy.deepcopy)."
        )


class FrozenTeacher:
    """A teacher that never trains: no gradients, in eval mode from the start (so Lightning's
    model summary lists it as ``eval`` and its train/eval bookkeeping sees one mode), its
    tapped features returned with its logits. `FrozenTeacherOwner` keeps it in eval mode
    when the owner's ``train()`` is called.

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
        self.model = model.requires_grad_(False).eval()
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
        if self.model.training:  # someone called teacher.train(): back to eval, for good
            self.model.eval()
        with (
            self.taps.capture() as store,
            explained_input_errors("teacher", self.model, x, dry_run=False),
        ):
            logits = self.model(x)
        return TeacherOutput(logits, self.taps.ordered(store))


#: Lightning's warning at the start of training when a module is in eval mode.
EVAL_MODE_WARNING = "Found {count} module(s) in eval mode at the start of training."


class FrozenTeacherOwner:
    """For a LightningModule that holds a `FrozenTeacher` (as ``self.frozen_teacher``):
    ``train()`` leaves the teacher in eval mode, and Lightning's warning about modules in
    eval mode at the start of training is silenced when the teacher's are the only ones (a
    student module in eval mode still warns). A subclass that overrides ``on_fit_start`` or
    ``on_train_start`` calls ``super()``'s."""

    _eval_warning_filter: tuple[Any, ...] | None = None

    def train(self, mode: bool = True) -> Any:
        """Set the train/eval mode of every submodule but the frozen teacher (always eval)."""
        super().train(mode)  # type: ignore[misc]
        frozen = _frozen_of(self)  # type: ignore[arg-type]
        if frozen is not None:
            frozen.model.eval()
        return self

    def on_fit_start(self) -> None:
        _drop_filter(self._eval_warning_filter)  # one a fit that failed early left behind
        self._eval_warning_filter = _silence_teacher_eval_warning(self)  # type: ignore[arg-type]
        super().on_fit_start()  # type: ignore[misc]

    def on_train_start(self) -> None:
        """Lightning has checked the modules' modes: the filter goes."""
        _drop_filter(self._eval_warning_filter)
        self._eval_warning_filter = None
        super().on_train_start()  # type: ignore[misc]


def _drop_filter(entry: tuple[Any, ...] | None) -> None:
    if entry is not None and entry in warnings.filters:
        warnings.filters.remove(entry)


def _silence_teacher_eval_warning(owner: nn.Module) -> tuple[Any, ...] | None:
    """A filter for Lightning's eval-mode warning when the frozen teacher's modules are the
    only ones in eval mode (the filter names their exact count); ``None`` otherwise."""
    frozen = _frozen_of(owner)
    if frozen is None:
        return None
    teacher = {id(m) for m in frozen.model.modules()}
    in_eval = [m for _, m in owner.named_modules() if not m.training]
    if not in_eval or any(id(m) not in teacher for m in in_eval):
        return None
    message = re.escape(EVAL_MODE_WARNING.format(count=len(in_eval)))
    warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)
    return warnings.filters[0]


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
