"""What the search writes and logs: the process file and its plots
(`ProcessWriter`) and the record of where a process came from
(`search_provenance`). The metrics are `search_logging`'s."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from . import __version__
from .contract import SearchableModule
from .process import DistillationProcess
from .search_step import SearchSettings


class ProcessWriter:
    """Writes the searched process: every ``save_every_n_steps`` rows and at the end of fit
    (JSON, atomically, global rank 0 only), with the line and heatmap plots beside it.

    Args:
        save_path: the process file; ``None``: nothing is written.
        save_every_n_steps: also write it every n recorded rows (0: only at the end).
        plot: write the PNG plots beside the file at the end of fit.
    """

    def __init__(self, save_path: str | None, save_every_n_steps: int, plot: bool) -> None:
        if save_every_n_steps < 0:
            raise ValueError(f"save_every_n_steps must be >= 0, got {save_every_n_steps}.")
        self.save_path = save_path
        self.save_every_n_steps = save_every_n_steps
        self.plot = plot

    def step_written(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """After a row is recorded: write the file when the row count is a multiple of
        ``save_every_n_steps``."""
        n = self.save_every_n_steps
        if n and len(process) % n == 0:
            self.save(trainer, process)

    def save(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """Write the process file (global rank 0; nothing while it has no rows)."""
        if self.save_path is None or len(process) == 0:
            return
        if trainer.is_global_zero:
            process.save(self.save_path)

    def finish(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """At the end of fit: the final file and the plots beside it (the loggers get the
        figures from the callback's logging)."""
        self.save(trainer, process)
        if len(process) == 0 or not self.plot or not trainer.is_global_zero:
            return
        if self.save_path is not None:
            png = Path(self.save_path).with_suffix(".png")
            process.plot(png)
            process.plot(png.with_name(png.stem + "_heatmap.png"), kind="heatmap")


def search_provenance(
    trainer: pl.Trainer, module: SearchableModule, settings: SearchSettings
) -> dict[str, Any]:
    """Versions, time, models, data, seed and the search settings of a new process."""
    dm = trainer.datamodule
    provenance: dict[str, Any] = {
        "library_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "student": type(module.student).__name__,
        "teacher": type(getattr(module, "teacher", None)).__name__,
        "dataset": type(dm).__name__ if dm is not None else None,
        "seed": getattr(dm, "seed", None),
        "hypergradient": settings.hypergradient,
        "alpha_lr": settings.alpha_lr,
        "world_size": trainer.world_size,
    }
    hp = getattr(module, "hparams", {})
    for key in ("student", "teacher"):
        if isinstance(hp.get(key), str):
            provenance[key] = hp[key]
    return provenance
