"""The contract between a distilling module and the callbacks: the objective the
hypergradient's math needs (`DistillationObjective`), the search's bookkeeping on top
(`SearchableModule`), what the replay needs (`ReplayableModule`; both share
`PathwayWeights`), the parameters the search differentiates
(`ParameterGroups`) and the training objective's parts (`Objective`). What a search step
hands to the training step that follows it is in `distpro_lightning.modules.step_context`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


def split_inputs_targets(batch: Any, owner: str) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch ``(x, y, ...)``: the one rule behind every module's
    ``split_batch`` hook. Any other layout is refused with the fix, naming ``owner`` (the
    module class whose ``split_batch`` to override)."""
    if not isinstance(batch, Mapping | Tensor | str):
        try:
            return batch[0], batch[1]
        except (KeyError, IndexError, TypeError):
            pass
    kind = f"a dict with keys {list(batch)}" if isinstance(batch, Mapping) else type(batch).__name__
    raise TypeError(
        f"split_batch cannot split a batch that is {kind}: it takes (inputs, targets, ...). "
        f"Override the hook {owner}.split_batch(self, batch) to return "
        "(inputs, targets), e.g. return batch['image'], batch['label']."
    )


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


@runtime_checkable
class PathwayWeights(Protocol):
    """The pathway weights of a module: its logits, names, normalised weights and active
    pathways; the part the search and the replay share."""

    alpha_logits: Tensor
    pathway_names: list[str]

    def alpha_weights(self, logits: Tensor | None = None) -> Tensor: ...

    def active_pathways(self, logits: Tensor | None = None) -> list[bool] | None: ...


@runtime_checkable
class DistillationObjective(PathwayWeights, Protocol):
    """What the hypergradient's math needs (`compute_hypergradient`): the student, the
    heads, the teacher outputs and the objective ``L_train``, differentiable with respect
    to theta (`search_parameters`) at given weights."""

    student: nn.Module
    distill_heads: nn.Module

    def split_batch(self, batch: Any) -> tuple[Any, Any]: ...

    def task_loss(self, student_outputs: Tensor, targets: Any) -> Tensor: ...

    def teacher_outputs(self, x: Tensor) -> TeacherOutput: ...

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


@runtime_checkable
class SearchableModule(DistillationObjective, Protocol):
    """What `ProcessSearchCallback` and `SearchStep` need from a module: the objective
    (`DistillationObjective`) and the search's bookkeeping: the step context it hands over,
    whether the training step applies a reused gradient, and a new process file.
    `DistProMixin` provides all of it."""

    #: The `distpro_lightning.modules.step_context.StepContext` handed over for the
    #: training step, or ``None`` (typed ``Any``: that module builds on this one).
    step_context: Any
    applies_reused_gradient: bool

    def new_process(self, provenance: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class ReplayableModule(PathwayWeights, Protocol):
    """What `ProcessScheduleCallback` needs from a module: the pathway weights and their
    normalisation (to check a process file against), the trained parameters (to check
    the optimizer holds them) and the distillation settings (for the loggers).
    `DistProMixin` provides all of it."""

    student: nn.Module
    distill_heads: nn.Module
    normalization: str
    normalization_bias: float
    weight_scale: float
    prune_threshold: float | None

    def search_parameters(self) -> ParameterGroups: ...

    def distillation_group(self) -> dict[str, Any]: ...


def missing_members(module: Any, protocol: type = SearchableModule) -> list[str]:
    """The members of ``protocol`` (and its bases) ``module`` lacks (empty: it fits)."""
    names = [
        n
        for base in protocol.__mro__
        if base not in (Protocol, object, Generic)
        for n in (*getattr(base, "__annotations__", {}), *vars(base))
        if not n.startswith("_")
    ]
    return sorted({n for n in names if not hasattr(module, n)})


def check_optimized(
    module: SearchableModule, optimizers: Iterable[torch.optim.Optimizer], who: str
) -> None:
    """Refuse trainable parameters of the student or the pathway heads that no optimizer
    holds (they would never train), listing them."""
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    missing = [n for n, p in module.search_parameters().named().items() if id(p) not in held]
    if not missing:
        return
    shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
    raise RuntimeError(
        f"{who}: trainable parameters that no optimizer updates, so they would never train: "
        f"{shown}. configure_optimizers must optimise the student and the pathway heads, e.g. "
        "SGD([*self.student.parameters(), *self.distill_heads.parameters()], ...); freeze "
        "(requires_grad_(False)) what is meant to stay fixed."
    )


def check_sole_weight_driver(callbacks: Iterable[Any], own: Any) -> None:
    """Refuse a Trainer in which another enabled callback sets the pathway weights as ``own``
    does (`ProcessSearchCallback` and `ProcessScheduleCallback` mark themselves with
    ``drives_pathway_weights``): each would overwrite the other's weights at every step, so
    the weights that train would not be the ones a search records or a process holds."""
    others = [
        c
        for c in callbacks
        if c is not own
        and getattr(c, "drives_pathway_weights", False)
        and getattr(c, "enabled", True)
    ]
    if not others:
        return
    names = ", ".join(type(c).__name__ for c in [own, *others])
    raise RuntimeError(
        f"This Trainer has several callbacks that set the pathway weights at every step "
        f"({names}): each overwrites the others' weights, so the weights that train are "
        "neither the ones a search records nor the ones a process holds. A fit either "
        "searches (one ProcessSearchCallback) or replays (one ProcessScheduleCallback): keep "
        "one of them, or pass enabled=False to the others. To start a search from a process, "
        "use ProcessSearchCallback(alpha={'init_process': path})."
    )
