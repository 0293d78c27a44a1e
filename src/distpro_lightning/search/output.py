"""What the search writes and logs: the process file and its plots
(`ProcessWriter`) and the record of where a process came from
(`search_provenance`). The metrics are `search.reporting`'s."""

from __future__ import annotations

import datetime as _dt
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distpro_lightning._version import __version__
from distpro_lightning.files import folder_lock
from distpro_lightning.modules.contract import SearchableModule
from distpro_lightning.process.core import DistillationProcess, ProcessFileError
from distpro_lightning.process.plots import plot_paths
from distpro_lightning.search.paths import (
    check_overwrite,
    check_save_path,
    default_process_path,
    with_log_dir,
)
from distpro_lightning.search.step import SearchSettings

#: ``save_path`` value that puts the process in the run's log folder
#: (`default_process_path`).
AUTO_PATH = "auto"


class ProcessWriter:
    """Writes the searched process (JSON, atomically, global rank 0 only): every
    ``save_every_n_steps`` rows, at every epoch end (``save_every_epoch``), on an exception
    (Ctrl-C included) and at the end of fit, with the line and heatmap plots beside it at the
    end. `prepare` checks the path before the first step.

    Args:
        save_path: the process file; ``"auto"``: ``process.json`` in the run's log folder;
            ``None``: nothing is written.
        save_every_n_steps: also write it every n recorded rows (0: not by step count).
        plot: write the PNG plots and log them to the loggers at the end of fit.
        save_every_epoch: write it at the end of every training epoch.
        overwrite: replace an existing process file of another run.
    """

    def __init__(
        self,
        save_path: str | None,
        save_every_n_steps: int,
        plot: bool,
        save_every_epoch: bool = True,
        overwrite: bool = False,
    ) -> None:
        if save_every_n_steps < 0:
            raise ValueError(f"save_every_n_steps must be >= 0, got {save_every_n_steps}.")
        self.save_path = save_path
        self.save_every_n_steps = save_every_n_steps
        self.plot = plot
        self.save_every_epoch = save_every_epoch
        self.overwrite = overwrite
        self.path: Path | None = None  # this fit's file: save_path resolved at fit start
        self._written: tuple[int, int, int] | None = None  # the file as this run last wrote it

    def prepare(self, trainer: pl.Trainer, run_id: str) -> None:
        """Before the first step: resolve the path (``"auto"``: the run's log folder) and
        refuse one that could not be written or that holds another run's process
        (`check_save_path`,
        `check_overwrite`)."""
        self.path, self._written = None, None
        if self.save_path is None:
            return
        if trainer.fast_dev_run:  # as Lightning's own outputs: a dry run writes nothing
            rank_zero_info("DistPro search: fast_dev_run, so no process file is written.")
            return
        if self.save_path == AUTO_PATH:
            raw: str | Path = default_process_path(trainer)
        else:  # the template stays as given: a second fit resolves it for its own run
            raw = trainer.strategy.broadcast(with_log_dir(self.save_path, trainer))
        path = check_save_path(raw, self.plot)
        if not self.overwrite:
            path = _continue_diverted(path, run_id)
        check_overwrite(path, run_id, self.overwrite)
        self.path = path

    def step_written(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """After a row is recorded: write the file when the row count is a multiple of
        ``save_every_n_steps``."""
        n = self.save_every_n_steps
        if n and len(process) % n == 0:
            self.save(trainer, process)

    def save(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """Write the process file (global rank 0; nothing while it has no rows)."""
        if self.path is None or len(process) == 0:
            return
        if trainer.is_global_zero:
            parent = self.path.parent
            lock = folder_lock(parent) if parent.is_dir() else nullcontext()
            with lock:  # a missing folder: the writer makes it, or names the error  # the check and the write as one step
                self._divert_if_taken(process)
                process.save(self.path)
                self._written = _stamp(self.path)

    def _divert_if_taken(self, process: DistillationProcess) -> None:
        """The other-run check of `prepare`, again at every save: when another search wrote
        this file since (two fits started on one ``save_path``), its file stays and this
        run's process goes to ``<name>.<run id>.json`` beside it, with a warning."""
        assert self.path is not None
        if self.overwrite or not self.path.exists() or _stamp(self.path) == self._written:
            return
        try:
            owner = DistillationProcess.load(self.path).run_id
        except (ProcessFileError, OSError):
            owner = "unreadable"
        if owner == process.run_id:
            return
        taken, self.path = self.path, diverted_path(self.path, str(process.run_id))
        rank_zero_warn(
            f"Another search (run {owner}) wrote {str(taken)!r} after this run (run "
            f"{process.run_id}) checked it at fit start: two fits share one save_path. Its "
            f"file is kept; this run's process is saved to {str(self.path)!r} instead (a "
            "resume of this run from its checkpoint continues there). Give each fit its own "
            "save_path (e.g. '{log_dir}/process.json')."
        )

    def finish(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """At the end of fit: the final file and the plots beside it (the loggers get the
        figures from the callback's logging)."""
        self.save(trainer, process)
        if len(process) == 0 or not self.plot or not trainer.is_global_zero:
            return
        if self.path is not None:
            for kind, image in plot_paths(self.path).items():
                process.plot(image, kind=kind)


def diverted_path(path: Path, run_id: str) -> Path:
    """Where a run's process goes when another search took its file: ``<stem>.<run id>``."""
    return path.with_name(f"{path.stem}.{run_id}{path.suffix}")


def _continue_diverted(path: Path, run_id: str) -> Path:
    """The file a resumed run continues in: its diverted file (`diverted_path`), when
    another search took ``path`` and this run's rows went there; else ``path``."""
    diverted = diverted_path(path, run_id)
    if not (path.exists() and diverted.is_file()):
        return path
    try:
        ours = DistillationProcess.load(diverted).run_id == run_id
    except (ProcessFileError, OSError):
        return path
    if ours:
        rank_zero_info(
            f"DistPro search: run {run_id} continues in {str(diverted)!r}, where its process "
            f"went when another search took {str(path)!r}."
        )
    return diverted if ours else path


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of the file at ``path`` as written (inode, size, mtime), ``None`` if absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def settings_record(settings: SearchSettings) -> dict[str, Any]:
    """The search settings as plain JSON values (the provenance's ``search_settings``)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def search_provenance(
    trainer: pl.Trainer, module: SearchableModule, settings: SearchSettings
) -> dict[str, Any]:
    """Versions, time, models, data, seed and the search settings of a new process. A
    resume with other settings updates ``search_settings`` (with ``hypergradient`` and
    ``alpha_lr``) and appends ``{"step", "changed": {name: [old, new]}}`` to
    ``settings_changes``."""
    dm = trainer.datamodule
    provenance: dict[str, Any] = {
        "library_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "student": type(module.student).__name__,
        "teacher": type(getattr(module, "teacher", None)).__name__,
        "dataset": type(dm).__name__ if dm is not None else None,
        # the data module's seed, else Lightning's global one (seed_everything)
        "seed": getattr(dm, "seed", None)
        if getattr(dm, "seed", None) is not None
        else _global_seed(),
        "hypergradient": settings.hypergradient,
        "alpha_lr": settings.alpha_lr,
        "search_settings": settings_record(settings),
        "world_size": trainer.world_size,
    }
    hp = getattr(module, "hparams", {})
    for key in ("student", "teacher"):
        if isinstance(hp.get(key), str):
            provenance[key] = hp[key]
    return provenance


def _global_seed() -> int | None:
    """The seed of ``seed_everything`` (Lightning keeps it in ``PL_GLOBAL_SEED``)."""
    import os

    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def save_on_exception(
    trainer: pl.Trainer, writer: ProcessWriter, process: DistillationProcess, exc: BaseException
) -> None:
    """Save the rows gathered so far when the fit raises (Ctrl-C included); a failure to
    save is a warning, never a second exception hiding the first."""
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    try:
        writer.save(trainer, process)
    except Exception as err:  # noqa: BLE001 - never hide the exception being handled
        rank_zero_warn(f"DistPro search: could not save the process on {exc!r}: {err}")
        return
    if writer.path is not None and len(process):
        rank_zero_info(f"DistPro search interrupted: {len(process)} steps saved to {writer.path}.")


def finish_search(
    trainer: pl.Trainer, writer: ProcessWriter, process: DistillationProcess, figures_logged: bool
) -> None:
    """At the end of the search: the epoch's held-out loss into the provenance, the file and
    its plots, the figures to the loggers (unless this step's are already there), the W&B
    artifact and a "process saved to" line."""
    import math

    from lightning.pytorch.utilities import rank_zero_info

    from distpro_lightning.process.plots import log_process_figures
    from distpro_lightning.search.reporting import log_process_artifact

    val = trainer.callback_metrics.get("search/val_loss")
    if val is not None and math.isfinite(float(val)):
        process.provenance["search_val_loss"] = float(val)
    writer.finish(trainer, process)
    if writer.plot and not figures_logged:
        log_process_figures(trainer, process, "search/process")
    if writer.path is not None and len(process) and trainer.is_global_zero:
        log_process_artifact(trainer, writer.path, process)
        rank_zero_info(f"DistPro: process saved to {writer.path} ({len(process)} steps)")
