"""The planned length of a fit in optimizer steps, as the search and the replay read it."""

from __future__ import annotations

import lightning.pytorch as pl


def planned_steps(trainer: pl.Trainer) -> int | None:
    """The fit's optimizer steps (``trainer.estimated_stepping_batches``), or ``None`` when
    its length is unknown: Lightning then estimates ``inf`` (``max_time`` alone,
    ``max_epochs=-1``) or ``-1`` (a training loader without ``len()`` and no
    ``max_steps``)."""
    total = trainer.estimated_stepping_batches
    return int(total) if 1 <= total < float("inf") else None
