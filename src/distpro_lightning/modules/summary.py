"""The pathway summary, DistPro's ``ModelSummary``: one row per pathway (name, teacher and
student feature shapes, transform, head parameters, pruned state) and the totals next to the
student's size. Printed at fit start by `DistProModule` (when the
Trainer's model summary is on) or by the `PathwaySummary` callback, and reused by
``distpro process summary`` for a process file (which knows no shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distpro_lightning.pathways.heads import KD_PATHWAY_NAME
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME

if TYPE_CHECKING:
    from distpro_lightning.process.core import DistillationProcess


@dataclass(frozen=True)
class PathwayRow:
    """One pathway of the summary (``None``: not known, e.g. from a process file)."""

    name: str
    teacher_shape: tuple[int, ...] | None
    student_shape: tuple[int, ...] | None
    transform: str
    head_parameters: int | None
    pruned: bool | None


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def pathway_rows(module: Any) -> list[PathwayRow]:
    """The rows of a module with `DistProMixin`, one per entry of ``module.pathway_names``
    (the feature pathways, ReviewKD's review pathway, Hinton KD), pruned state from its
    current logits and ``prune_threshold``. The head parameters of a row are those of its
    submodule of ``distill_heads`` (``heads.<i>``, ``review``), as Lightning's
    ``ModelSummary`` counts them."""
    active = module.active_pathways()

    def pruned(i: int) -> bool | None:
        return None if active is None else not active[i]

    heads = module.distill_heads
    rows = [
        PathwayRow(
            spec.name,
            module.teacher_tap_shapes[spec.teacher_idx],
            module.student_tap_shapes[spec.student_idx],
            spec.kind,
            _count(head),
            pruned(i),
        )
        for i, (spec, head) in enumerate(zip(module.pathway_specs, heads.heads))
    ]
    if getattr(heads, "review", None) is not None:
        rows.append(
            PathwayRow(
                REVIEW_PATHWAY_NAME,
                module.teacher_tap_shapes[-1],
                module.student_tap_shapes[-1],
                "abf",
                _count(heads.review),
                pruned(len(rows)),
            )
        )
    if module.response_kd:
        rows.append(
            PathwayRow(
                KD_PATHWAY_NAME,
                module.teacher_output_shape,
                module.student_output_shape,
                "kd",
                0,
                pruned(len(rows)),
            )
        )
    return rows


def process_rows(process: DistillationProcess) -> list[PathwayRow]:
    """The rows of a process file: names and transforms, pruned state of its last row."""
    final = process.final() if len(process) else None
    tau = process.prune_threshold
    rows = []
    for i, name in enumerate(process.pathway_names):
        kind = name.rsplit(":", 1)[1] if ":" in name else "-"
        pruned = None if tau is None or final is None else bool(final[i] <= tau)
        rows.append(PathwayRow(name, None, None, kind, None, pruned))
    return rows


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else "x".join(str(s) for s in shape)


def format_pathway_table(rows: Sequence[PathwayRow], totals: Sequence[str] = ()) -> str:
    """The table of ``rows`` followed by the ``totals`` lines."""
    width = max([len("pathway"), *(len(r.name) for r in rows)])
    header = (
        f"{'#':>3} {'pathway':<{width}} {'teacher':>12} {'student':>12} {'transform':>9} "
        f"{'head params':>11} {'pruned':>6}"
    )
    lines = [header, "-" * len(header)]
    for i, r in enumerate(rows):
        params = "-" if r.head_parameters is None else f"{r.head_parameters:,}"
        pruned = "-" if r.pruned is None else ("yes" if r.pruned else "no")
        lines.append(
            f"{i + 1:>3} {r.name:<{width}} {_shape(r.teacher_shape):>12} "
            f"{_shape(r.student_shape):>12} {r.transform:>9} {params:>11} {pruned:>6}"
        )
    return "\n".join([*lines, "-" * len(header), *totals])


def pathway_summary(module: Any) -> str:
    """The pathway table of ``module`` with its totals: pathways (pruned), head parameters
    and their share of the student's, the student's and the (frozen) teacher's sizes."""
    rows = pathway_rows(module)
    heads = sum(r.head_parameters or 0 for r in rows)
    student = _count(module.student)
    pruned = sum(1 for r in rows if r.pruned)
    totals = [
        f"{len(rows)} pathways ({pruned} pruned), normalization {module.normalization}",
        f"{heads:,} head parameters ({100 * heads / max(student, 1):.1f} % of the student's "
        f"{student:,}); teacher {_count(module.teacher):,} (frozen)",
    ]
    return format_pathway_table(rows, totals)


#: Head parameters above this multiple of the student's are warned about at fit start.
HEADS_OVER_STUDENT_WARN = 10.0


def announce_pathways(trainer: pl.Trainer, module: Any) -> None:
    """Print the pathway table when the Trainer prints a model summary, and warn when the
    pathway heads hold more than `HEADS_OVER_STUDENT_WARN` times the student's parameters
    (every step and the checkpoints are then mostly heads), naming the largest head and the
    fixes not already in force (`heads_size_warning`)."""
    from lightning.pytorch.callbacks import ModelSummary

    if any(isinstance(cb, ModelSummary) for cb in trainer.callbacks):
        rank_zero_info("DistPro pathways:\n" + pathway_summary(module))
    message = heads_size_warning(module)
    if message is not None:
        rank_zero_warn(message)


def heads_size_warning(module: Any) -> str | None:
    """The warning about heads of more than `HEADS_OVER_STUDENT_WARN` x the student's
    parameters (``None`` when they are smaller): their total as Lightning's summary counts
    ``distill_heads``, the pathway whose head holds the most, and only the fixes whose
    setting is not already in force."""
    heads = _count(module.distill_heads)
    student = _count(module.student)
    if heads <= HEADS_OVER_STUDENT_WARN * max(student, 1):
        return None
    top = max(pathway_rows(module), key=lambda r: r.head_parameters or 0)
    cfg = getattr(module, "distillation_config", None)
    fixes = []
    if top.name == REVIEW_PATHWAY_NAME:
        fixes.append("no review pathway (distillation.review_kd=false)")
    if len(module.transform_kinds) > 1 or list(module.transform_kinds) not in ([], ["conv_bn"]):
        fixes.append("fewer transforms (distillation.transforms=[conv_bn])")
    if cfg is not None and cfg.connections == "all":
        fixes.append("fewer connections (distillation.connections=lower_to_higher)")
    if module.prune_threshold is None:
        fixes.append("pruning (distillation.prune_threshold=0.5)")
    advice = (
        "Use " + ", ".join(fixes) + "."
        if fixes
        else "The settings that shrink them are in force already; a wider student, or fewer "
        "taps (distillation.student_taps/teacher_taps), makes the heads a smaller share."
    )
    return (
        f"The {module.num_pathways} pathway heads hold {heads:,} parameters, "
        f"{heads / max(student, 1):.0f} x the student's {student:,}: the steps and the "
        f"checkpoints are mostly heads. The largest is {top.name}'s "
        f"({top.head_parameters:,}). {advice}"
    )


class PathwaySummary(Callback):
    """Print `pathway_summary` at fit start (rank 0), like Lightning's ``ModelSummary``;
    for modules built on the mixin (``DistProModule`` prints it itself)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info("DistPro pathways:\n" + pathway_summary(pl_module))
