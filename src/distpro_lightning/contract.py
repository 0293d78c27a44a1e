"""The contract between a distilling module and the search: what the search needs from a
module (`SearchableModule`), the parameters it differentiates
(`ParameterGroups`), the training objective's parts (`Objective`) and what a
search step hands to the training step that follows it (`StepContext`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn


@dataclass
class TeacherOutput:
    """The teacher's logits and tapped features for one batch (computed without grad)."""

    logits: Tensor
    features: list[Tensor]


class Objective(NamedTuple):
    """The training objective ``L_train = task + sum_p w_p delta_p`` and its parts."""

    loss: Tensor
    task: Tensor
    pathway_losses: Tensor
    logits: Tensor


@dataclass(frozen=True)
class ParameterGroups:
    """theta of the search, in its two groups: the student's trainable parameters and the
    pathway heads', each keyed by its name inside its own module.

    The virtual step moves only ``student`` (the held-out loss does not depend on the heads);
    the mixed derivative and a reused gradient cover both groups.
    """

    student: dict[str, Tensor]
    heads: dict[str, Tensor]

    def tensors(self) -> list[Tensor]:
        """The student's tensors, then the heads', in order."""
        return [*self.student.values(), *self.heads.values()]

    def named(self) -> dict[str, Tensor]:
        """Every tensor under a qualified name, ``student.<name>`` or ``heads.<name>`` (for
        messages and logs)."""
        named = {f"student.{k}": v for k, v in self.student.items()}
        named.update({f"heads.{k}": v for k, v in self.heads.items()})
        return named

    def map(self, fn: Callable[[Tensor], Tensor]) -> ParameterGroups:
        """The same groups with ``fn`` applied to every tensor."""
        return ParameterGroups(
            {k: fn(v) for k, v in self.student.items()}, {k: fn(v) for k, v in self.heads.items()}
        )

    def with_tensors(self, tensors: Sequence[Tensor]) -> ParameterGroups:
        """The same names with ``tensors`` (in `tensors` order) as values."""
        it: Iterator[Tensor] = iter(tensors)
        return ParameterGroups(
            {k: next(it) for k in self.student}, {k: next(it) for k in self.heads}
        )


@dataclass(frozen=True)
class ReusedGradient:
    """The virtual step's training gradient, handed to the real update
    (``reuse_training_gradient=True``), and the training loss it came from."""

    parameters: ParameterGroups
    gradients: ParameterGroups
    loss: Tensor

    def surrogate_loss(self) -> Tensor:
        """A scalar whose gradient with respect to theta is exactly `gradients`."""
        pairs = zip(self.parameters.tensors(), self.gradients.tensors())
        return sum((p * g.detach()).sum() for p, g in pairs)


@dataclass(frozen=True)
class SharedForward:
    """The search's training pass on this step's batch at the current ``theta``, its graph
    kept: the real update's forward, already computed (``share_training_forward``). Its
    pathway losses hold the pathways ``active`` then (``None``: all)."""

    objective: Objective
    active: list[bool] | None


@dataclass
class StepContext:
    """What the search computed for one training step, for the module's training step: the
    teacher outputs of the batch (so the teacher runs once per step), the search's training
    forward (`SharedForward`) and, with gradient reuse, the training gradient. Each is
    handed out once.

    It belongs to optimizer step ``step`` and training batch ``batch_idx``; a module reads it
    only at that step, and only for an input of ``input_shape``.
    """

    step: int
    batch_idx: int
    input_shape: tuple[int, ...]
    teacher: TeacherOutput | None = None
    reused: ReusedGradient | None = None
    forward: SharedForward | None = None

    def take_teacher(self, x: Tensor) -> TeacherOutput | None:
        """The cached teacher output, if it was computed for an input shaped like ``x``."""
        teacher, self.teacher = self.teacher, None
        return teacher if teacher is not None and tuple(x.shape) == self.input_shape else None

    def take_forward(self, x: Tensor, active: list[bool] | None) -> SharedForward | None:
        """The shared training forward (once), if it was computed for an input shaped like
        ``x`` with the same ``active`` pathways (a pathway pruned or revived by this step's
        alpha update needs a new forward). Taking it also drops the teacher outputs."""
        shared, self.forward = self.forward, None
        if shared is None or tuple(x.shape) != self.input_shape or shared.active != active:
            return None
        self.teacher = None
        return shared

    def take_reused(self) -> ReusedGradient | None:
        """The reused gradient (once)."""
        reused, self.reused = self.reused, None
        return reused


@runtime_checkable
class SearchableModule(Protocol):
    """What `ProcessSearchCallback` and
    `SearchStep` need from a module.
    `DistProMixin` provides all of it."""

    student: nn.Module
    distill_heads: nn.Module
    alpha_logits: Tensor
    pathway_names: list[str]
    step_context: StepContext | None
    applies_reused_gradient: bool

    def split_batch(self, batch: Any) -> tuple[Any, Any]: ...

    def task_loss(self, student_outputs: Tensor, targets: Any) -> Tensor: ...

    def teacher_outputs(self, x: Tensor) -> TeacherOutput: ...

    def alpha_weights(self, logits: Tensor | None = None) -> Tensor: ...

    def active_pathways(self, logits: Tensor | None = None) -> list[bool] | None: ...

    def search_parameters(self) -> ParameterGroups: ...

    def student_forward(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor: ...

    def pathway_forward(
        self,
        x: Tensor,
        teacher: TeacherOutput,
        active: Sequence[bool] | None = None,
        params: ParameterGroups | None = None,
    ) -> tuple[Tensor, Tensor]: ...

    def objective(
        self,
        x: Tensor,
        y: Any,
        teacher: TeacherOutput,
        weights: Tensor,
        active: Sequence[bool] | None = None,
    ) -> Objective: ...

    def new_process(self, provenance: Mapping[str, Any]) -> Any: ...


def missing_members(module: Any) -> list[str]:
    """The `SearchableModule` members ``module`` lacks (empty: it fits)."""
    names = [
        n
        for n in (*SearchableModule.__annotations__, *SearchableModule.__dict__)
        if not n.startswith("_")
    ]
    return sorted({n for n in names if not hasattr(module, n)})
