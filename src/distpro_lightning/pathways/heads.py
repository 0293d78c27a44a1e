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

from distpro_lightning.functional.losses import BATCHED_DISTANCES
from distpro_lightning.pathways.fused import (
    bilinear_by_matmul,
    fusable,
    group_forward,
    interpolation_matrix,
    plan_groups,
)
from distpro_lightning.pathways.transforms import build_transform, resize_map

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
    """All pathways, ordered by teacher tap, student tap, transform kind (no kinds are
    needed where there are no feature connections, e.g. ``connections="none"``)."""
    if not kinds and pairs:
        raise ValueError(
            "At least one transform kind is needed for feature pathways (transforms=[...], "
            "e.g. [conv_bn]); with connections='none' none is."
        )
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"Duplicate transform kinds in {list(kinds)}.")
    return [
        PathwaySpec(i, j, teacher_taps[i], student_taps[j], k)
        for i, j in sorted(pairs)
        for k in kinds
    ]


MIN_FUSED = {"cuda": 3}
"""Fewest active heads of a connection that run fused, by device type (default 2); fewer run
one by one. Measured (``benchmarks/heads_cost.py``, docs/benchmarks.md): on an H200 a fused
pair of heads cost more than two separate heads (its weight concatenations are launches too),
on CPU a pair already gains."""


def _has_hooks(head: nn.Module) -> bool:
    # nn.Module has no public query for registered hooks; these dicts are what it consults
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in head.modules()
    )


class PathwayHeads(nn.Module):
    """The transform heads of all feature pathways and their distances.

    ``forward(student_feats, teacher_feats, active)`` returns the vector of pathway losses
    ``[P]``; entries whose ``active`` flag is false are not computed (their head is not
    called) and are exactly zero.

    Args:
        specs: the pathways, in the order of the loss vector.
        student_shapes: per-sample shape of each student tap.
        teacher_shapes: per-sample shape of each teacher tap.
        distance: ``distance(out, target) -> scalar``.
        fused: run the heads of one ``(student tap, teacher tap)`` connection together
            (`pathways.fused`): the same losses, gradients and
            running statistics, in fewer and larger kernels. ``False``: each head on its
            own, one after another. ``None`` (default): fused, unless ``compiled`` (the
            compiler does better from the per-pathway form: measured, docs/benchmarks.md). A connection with fewer active heads than
            `MIN_FUSED` asks for, and a head with module hooks on it (so that its hooks
            fire), run head by head.
        grouped_convs: in the fused path, run the attention heads' 3x3 convolutions as
            grouped convolutions (``True``) or one per head (``False``); ``None``: grouped
            on CUDA, one per head elsewhere (measured: ``docs/benchmarks.md``).
        compiled: compile the heads' forward with ``torch.compile`` (``nn.Module.compile``);
            parameter names and the state dict are unchanged. Each new pruning pattern
            compiles anew.
        review: the review pathway (`pathways.review.ReviewPathway`), computed after the
            feature pathways as the last entry of the loss vector; ``None``: none.
    """

    def __init__(
        self,
        specs: Sequence[PathwaySpec],
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        distance: Callable[[Tensor, Tensor], Tensor],
        fused: bool | None = None,
        grouped_convs: bool | None = None,
        compiled: bool = False,
        review: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.specs = list(specs)
        self.review = review
        self.distance = distance
        self.batched_distance = BATCHED_DISTANCES.get(distance)
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
        self.fused = not compiled if fused is None else bool(fused)
        self.grouped_convs = grouped_convs
        self.groups, self.unfused_pathways = plan_groups(self.specs, self.heads)
        self._order_index: dict[tuple, Tensor] = {}
        self._interpolation: dict[tuple, Tensor] = {}
        self.compiled = bool(compiled)
        if self.compiled:
            self.compile()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self.compiled:  # a deep copy or unpickled module drops the compiled call
            self.compile()

    def pathway_loss(
        self, p: int, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]
    ) -> Tensor:
        """The loss of pathway ``p`` alone (its head, then the distance): a scalar."""
        spec = self.specs[p]
        target = teacher_feats[spec.teacher_idx]
        size = tuple(target.shape[-2:]) if target.dim() == 4 else target.shape[1]
        out = self.heads[p](student_feats[spec.student_idx], size)
        return self.distance(out.float(), target.float())

    @property
    def num_losses(self) -> int:
        """Entries of the loss vector: the feature pathways, then the review pathway."""
        return len(self.specs) + (self.review is not None)

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        active: Sequence[bool] | None = None,
    ) -> Tensor:
        n = len(self.specs)
        losses = self.feature_losses(
            student_feats, teacher_feats, None if active is None else list(active)[:n]
        )
        if self.review is None:
            return losses
        if active is None or active[n]:
            review = self.review(student_feats, teacher_feats).float().reshape(1)
        else:
            review = losses.new_zeros(1)
        return torch.cat([losses, review])

    def feature_losses(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        active: Sequence[bool] | None = None,
    ) -> Tensor:
        """The losses of the feature pathways ``[len(specs)]``."""
        if not self.fused:
            return self._forward_per_pathway(student_feats, teacher_feats, active)
        parts: list[Tensor] = []
        order: list[int] = []
        for group in self.groups:
            members = [p for p in group.members if active is None or active[p]]
            alone = [p for p in members if _has_hooks(self.heads[p])]
            members = [p for p in members if p not in alone]
            heads = [self.heads[p] for p in members]
            x = student_feats[group.student_idx]
            if len(members) >= MIN_FUSED.get(x.device.type, 2) and fusable(heads):
                target = teacher_feats[group.teacher_idx]
                grouped = x.is_cuda if self.grouped_convs is None else self.grouped_convs
                size = tuple(target.shape[-2:])
                out = group_forward(heads, x, size, grouped, self._upsample)
                parts.append(self._group_distance(out.unflatten(1, (len(members), -1)), target))
                order += members
            else:
                alone += members
            for p in alone:
                parts.append(self.pathway_loss(p, student_feats, teacher_feats).reshape(1))
                order.append(p)
        for p in self.unfused_pathways:
            if active is None or active[p]:
                parts.append(self.pathway_loss(p, student_feats, teacher_feats).reshape(1))
                order.append(p)
        return self._assemble(parts, order, student_feats[0])

    def _upsample(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """`resize_map`, bilinear growth as two matmuls."""
        if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
            return resize_map(x, size)
        key = (*x.shape[-2:], *size, x.device, x.dtype)
        if key not in self._interpolation:
            rows = interpolation_matrix(x.shape[-2], size[0], x)
            self._interpolation[key] = (rows, interpolation_matrix(x.shape[-1], size[1], x))
        rows, cols = self._interpolation[key]
        return bilinear_by_matmul(x, rows, cols)

    def _group_distance(self, outs: Tensor, target: Tensor) -> Tensor:
        if self.batched_distance is not None:
            return self.batched_distance(outs.float(), target.float())
        return torch.stack([self.distance(o.float(), target.float()) for o in outs.unbind(1)])

    def _assemble(self, parts: list[Tensor], order: list[int], ref: Tensor) -> Tensor:
        """The ``[P]`` loss vector from the computed ``parts`` of pathways ``order``."""
        n = len(self.specs)
        if not parts:
            return ref.new_zeros((n,), dtype=torch.float32)
        if order == list(range(n)):
            return torch.cat(parts)
        key = (tuple(order), ref.device)
        if key not in self._order_index:
            slot = {p: i for i, p in enumerate(order)}
            index = [slot.get(p, len(order)) for p in range(n)]
            self._order_index[key] = torch.tensor(index, device=ref.device)
        values = torch.cat([*parts, parts[0].new_zeros(1)])
        return values[self._order_index[key]]

    def _forward_per_pathway(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        active: Sequence[bool] | None,
    ) -> Tensor:
        losses = []
        ref = student_feats[0]
        zero = ref.new_zeros((), dtype=torch.float32)
        for p in range(len(self.specs)):
            if active is not None and not active[p]:
                losses.append(zero)
                continue
            losses.append(self.pathway_loss(p, student_feats, teacher_feats))
        return torch.stack(losses) if losses else ref.new_zeros((0,), dtype=torch.float32)
