"""What a search step hands to the training step that follows it (`StepContext`: the
teacher outputs, the shared training forward, the reused gradient) and the module's side of
it (`StepContextReader`, a base of `DistProMixin`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distpro_lightning.modules.contract import Objective, ParameterGroups, TeacherOutput


@dataclass(frozen=True)
class ReusedGradient:
    """The virtual step's training gradient, handed to the real update
    (``reuse_training_gradient=True``), the training loss it came from and that loss's task
    part (``None`` when the producer did not separate it)."""

    parameters: ParameterGroups
    gradients: ParameterGroups
    loss: Tensor
    task_loss: Tensor | None = None

    def surrogate_loss(self) -> Tensor:
        """A scalar whose gradient with respect to theta is exactly `gradients`."""
        pairs = zip(self.parameters.tensors(), self.gradients.tensors())
        return sum((p * g.detach()).sum() for p, g in pairs)


@dataclass(frozen=True)
class SharedForward:
    """The search's training pass on this step's batch at the current ``theta``, its graph
    kept: the real update's forward, already computed (``share_training_forward``). Its
    pathway losses hold the pathways ``active`` then (``None``: all). The pass updated the
    BatchNorm running statistics as the real forward would; ``before`` holds them as they
    were, for a step that runs its own forward after all (`discard`)."""

    objective: Objective
    active: list[bool] | None
    before: BufferSnapshot | None = None

    def discard(self) -> None:
        """Give the forward up before another one runs: the running statistics go back to
        their values before the pass, so the step updates them once."""
        if self.before is not None:
            self.before.restore()


@dataclass
class StepContext:
    """What the search computed for one training step, for the module's training step: the
    teacher outputs of the batch (so the teacher runs once per step), the search's training
    forward (`SharedForward`) and, with gradient reuse, the training gradient. Each is
    handed out once.

    It belongs to optimizer step ``step`` and training batch ``batch_idx``; a module reads it
    only at that step, and only for the input it was computed from (`matches`): an input of
    ``input_shape`` equal to ``inputs`` (the same tensor, unchanged in place, or equal
    values), so a training step that augments or replaces its batch gets fresh passes.
    """

    step: int
    batch_idx: int
    input_shape: tuple[int, ...]
    teacher: TeacherOutput | None = None
    reused: ReusedGradient | None = None
    forward: SharedForward | None = None
    inputs: Tensor | None = None

    def __post_init__(self) -> None:
        self._version = self.inputs._version if self.inputs is not None else None

    def matches(self, x: Tensor) -> bool:
        """Whether ``x`` is the input the search computed this context from."""
        if tuple(x.shape) != self.input_shape:
            return False
        if self.inputs is None:
            return True
        if self.inputs._version != self._version:  # changed in place since
            return False
        return x is self.inputs or bool(torch.equal(x, self.inputs))

    def take_teacher(self, x: Tensor) -> TeacherOutput | None:
        """The cached teacher output, if it was computed for ``x`` (`matches`)."""
        teacher, self.teacher = self.teacher, None
        return teacher if teacher is not None and self.matches(x) else None

    def take_forward(self, x: Tensor, active: list[bool] | None) -> SharedForward | None:
        """The shared training forward (once), if it was computed for ``x`` (`matches`) with
        the same ``active`` pathways; taking it also drops the teacher outputs. Otherwise it
        is discarded (`SharedForward.discard`) for the step's own forward."""
        shared, self.forward = self.forward, None
        if shared is None:
            return None
        if not self.matches(x) or shared.active != active:
            shared.discard()
            return None
        self.teacher = None
        return shared

    def take_reused(self) -> ReusedGradient | None:
        """The reused gradient (once)."""
        reused, self.reused = self.reused, None
        return reused


def install_step_context(module: Any, context: StepContext) -> None:
    """Hand a search step's `StepContext` to the module for its training step (the one
    place it is handed over; `release_step_context` takes it back)."""
    module.step_context = context


def release_step_context(module: Any) -> None:
    """Drop the `StepContext` a module holds (and the graph and outputs it keeps): the one
    place the search releases what `SearchStep` handed over."""
    module.step_context = None


class StepContextReader:
    """The module's side of `StepContext`: each part is read at the optimizer step it
    belongs to (``global_step``), once. The class using it provides ``global_step``,
    ``teacher_outputs`` and ``active_pathways`` (a LightningModule with `DistProMixin`)."""

    step_context: StepContext | None = None

    def current_step_context(self) -> StepContext | None:
        """`step_context` if it belongs to the current optimizer step, else ``None``."""
        ctx = self.step_context
        return ctx if ctx is not None and ctx.step == self.global_step else None

    def _teacher_for(self, x: Tensor) -> TeacherOutput:
        ctx = self.current_step_context()
        cached = ctx.take_teacher(x) if ctx is not None else None
        return cached if cached is not None else self.teacher_outputs(x)

    def take_reused_gradient(self) -> ReusedGradient | None:
        """With ``reuse_training_gradient=True``: the search's training gradient for this
        step (once); return its ``surrogate_loss()`` from ``training_step``. Else ``None``."""
        ctx = self.current_step_context()
        reused = ctx.take_reused() if ctx is not None else None
        if reused is not None:
            ctx.teacher = None
        return reused

    def take_shared_forward(self, x: Tensor) -> SharedForward | None:
        """The search's training forward of this step for ``x`` (once), if it still holds
        the active pathways; else ``None``."""
        ctx = self.current_step_context()
        return ctx.take_forward(x, self.active_pathways()) if ctx is not None else None


class BufferSnapshot:
    """A copy of modules' buffers (BatchNorm running statistics) to put back later; a new
    `take` of the same buffers reuses the copy's storage."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.saved: list[Tensor] = []

    def take(self, modules: Iterable[nn.Module]) -> BufferSnapshot:
        """Copy the buffers of ``modules`` (one fused copy); returns ``self``."""
        buffers = [b for m in modules for b in m.buffers()]
        if [b.data_ptr() for b in buffers] != [b.data_ptr() for b in self.buffers]:
            self.buffers = buffers
            self.saved = [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self.saved, [b.detach() for b in buffers])
        return self

    def restore(self) -> None:
        """Put the copied values back into the buffers."""
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self.saved)
