"""Each ``distpro fit`` saves its resolved ``config.yaml`` in its own run folder, never over
another run's.

Lightning's ``SaveConfigCallback`` writes to ``trainer.log_dir``, which is the shared
``save_dir`` for a W&B logger: every trial of a sweep would write the same file.
`RunConfigCallback` writes to the run's log folder instead, the one ``{log_dir}`` names in
``search.output.save_path`` (`run_log_dir`: the CSV or TensorBoard ``version_N`` folder,
``save_dir/<project>/<run id>`` for W&B, ``default_root_dir`` without a logger), and, as
Lightning does by default, refuses to replace a ``config.yaml`` that is already there,
unless the fit resumes from a checkpoint (the same run, continued).
"""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback

from distpro_lightning.errors import DistProError
from distpro_lightning.search.paths import run_log_dir


class ConfigExistsError(DistProError, FileExistsError):
    """A run's ``config.yaml`` would replace another run's."""


#: ``save``'s keyword that keeps None values in the file: jsonargparse 4.49 renamed
#: ``skip_none`` to ``skip_unset`` (the old name warns); older versions know only the old one
_KEEP_NONE = (
    "skip_unset"
    if tuple(int(p) for p in re.findall(r"\d+", version("jsonargparse"))[:2]) >= (4, 49)
    else "skip_none"
)


def run_folder(trainer: pl.Trainer) -> str:
    """This run's log folder (`run_log_dir`), the same on every rank; a logger that names
    its run only once it starts (W&B) is started first, on rank 0."""
    folder = None
    if trainer.is_global_zero:
        logger = trainer.logger
        if logger is not None and logger.version is None:
            _ = logger.experiment  # W&B: the run id exists once the run is started
        folder = run_log_dir(trainer)
    return trainer.strategy.broadcast(folder)


class RunConfigCallback(SaveConfigCallback):
    """``SaveConfigCallback`` that writes ``config.yaml`` to the run's own log folder
    (`run_folder`) and refuses to replace an existing one (see the module docs)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        path = os.path.join(run_folder(trainer), self.config_filename)
        exists = trainer.strategy.broadcast(trainer.is_global_zero and os.path.isfile(path))
        if exists and not (self.overwrite or self._resumes()):
            raise ConfigExistsError(_refusal(path))
        if trainer.is_global_zero:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.parser.save(
                self.config, path, **{_KEEP_NONE: False}, overwrite=True, multifile=self.multifile
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _resumes(self) -> bool:
        config: Any = self.config
        return bool(config.get("ckpt_path")) if hasattr(config, "get") else False


def _refusal(path: str) -> str:
    return (
        f"{path!r} already holds the config.yaml of another run in this log folder; refusing "
        "to replace it. Give each fit its own run folder: a logger that makes one per run "
        "(CSVLogger or TensorBoardLogger: version_N; WandbLogger: the run id), or, without a "
        "logger, its own --trainer.default_root_dir; or move the old file away."
    )
