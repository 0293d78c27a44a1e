"""Pathway specifications, connection rules and the container of transform heads.

A pathway ``(i, j, k)`` connects teacher tap ``i`` to student tap ``j`` through transform
kind ``k``; its name is ``"<teacher_tap>-><student_tap>:<kind>"``, e.g.
``"layer2->layer3:attn2"``. Order: teacher tap, then student tap, then transform kind —
the order of the paper's ``alpha[i, j, k]`` and of process files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .transforms import build_transform

KD_PATHWAY_NAME = "logits->logits:kd"
CONNECTION_RULES = ("all", "lower_to_higher", "none")


@dataclass(frozen=True)
class PathwaySpec:
    """One distillation pathway: teacher tap ``teacher_idx`` -> student tap ``student_idx``."""

    teacher_idx: int
    student_idx: int
    teacher_tap: str
    student_tap: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.teacher_tap}->{self.student_tap}:{self.kind}"


def resolve_connections(
    connections: str | Sequence[Sequence[int]], n_teacher: int, n_student: int
) -> list[tuple[int, int]]:
    """Expand a connection rule into ``(teacher_idx, student_idx)`` pairs.

    * ``"all"``: every teacher tap to every student tap.
    * ``"lower_to_higher"``: teacher level ``i`` to student levels ``j >= i`` (levels are
      aligned at the deepest tap when the tap counts differ), as ReviewKD and the official
      DistPro code do.
    * ``"none"``: no feature pathways (only with response KD: the Hinton-KD baseline).
    * an explicit list of ``(teacher_idx, student_idx)`` pairs (0-based).
    """
    if isinstance(connections, str):
        if connections == "none":
            return []
        if connections == "all":
            return [(i, j) for i in range(n_teacher) for j in range(n_student)]
        if connections == "lower_to_higher":
            offset = n_student - n_teacher
            return [(i, j) for i in range(n_teacher) for j in range(n_student) if j >= i + offset]
        raise ValueError(
            f"Unknown connection rule {connections!r}. Use one of {CONNECTION_RULES} or a list "
            "of (teacher_idx, student_idx) pairs."
        )
    pairs: list[tuple[int, int]] = []
    for pair in connections:
        if len(pair) != 2:
            raise ValueError(f"Connection {pair!r} must be a (teacher_idx, student_idx) pair.")
        i, j = int(pair[0]), int(pair[1])
        if not 0 <= i < n_teacher or not 0 <= j < n_student:
            raise ValueError(
                f"Connection ({i}, {j}) is out of range: there are {n_teacher} teacher taps "
                f"(indices 0..{n_teacher - 1}) and {n_student} student taps (0..{n_student - 1})."
            )
        pairs.append((i, j))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"Duplicate connections in {pairs}.")
    return pairs


def build_specs(
    teacher_taps: Sequence[str],
    student_taps: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    kinds: Sequence[str],
) -> list[PathwaySpec]:
    """All pathways, ordered by teacher tap, student tap, transform kind."""
    if not kinds:
        raise ValueError("At least one transform kind is needed.")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"Duplicate transform kinds in {list(kinds)}.")
    return [
        PathwaySpec(i, j, teacher_taps[i], student_taps[j], k)
        for i, j in sorted(pairs)
        for k in kinds
    ]


class PathwayHeads(nn.Module):
    """The transform heads of all feature pathways and their distances.

    ``forward(student_feats, teacher_feats, active)`` returns the vector of pathway losses
    ``[P]``; entries whose ``active`` flag is false are not computed (their head is not
    called) and are exactly zero.
    """

    def __init__(
        self,
        specs: Sequence[PathwaySpec],
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        distance: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.specs = list(specs)
        self.distance = distance
        heads = []
        for s in self.specs:
            try:
                heads.append(
                    build_transform(
                        s.kind, student_shapes[s.student_idx], teacher_shapes[s.teacher_idx]
                    )
                )
            except ValueError as exc:
                raise ValueError(f"Pathway {s.name!r}: {exc}") from None
        self.heads = nn.ModuleList(heads)

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        active: Sequence[bool] | None = None,
    ) -> Tensor:
        losses = []
        ref = student_feats[0]
        zero = ref.new_zeros(())
        for p, (spec, head) in enumerate(zip(self.specs, self.heads)):
            if active is not None and not active[p]:
                losses.append(zero)
                continue
            target = teacher_feats[spec.teacher_idx]
            size = tuple(target.shape[-2:]) if target.dim() == 4 else target.shape[1]
            out = head(student_feats[spec.student_idx], size)
            losses.append(self.distance(out.float(), target.float()))
        return torch.stack(losses) if losses else ref.new_zeros((0,))
