"""What the search reports to Lightning: per-step metrics through the module's ``log`` (so the
Trainer's ``log_every_n_steps`` decides which steps reach the loggers), epoch aggregates and
summaries for sweeps, a short status in the progress bar, the process figures at every epoch
end, the search settings as hyperparameters and the process file as a W&B artifact."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric

from distpro_lightning.grouping import plain
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.process.plots import log_process_figures
from distpro_lightning.process.weights import WeightSummary, weight_summary
from distpro_lightning.search.step import SearchRecord


class SearchLogger:
    """Logs the search through ``module.log`` at every optimizer step; Lightning's logger
    connector sends a step's values to the loggers on the Trainer's ``log_every_n_steps``
    cadence, so the values a logger receives at step ``s`` are those of step ``s``.

    Per step (``on_step``): ``search/val_loss_step`` (held-out loss), ``search/hypergrad_norm``,
    ``search/active_pathways``, ``search/weight_entropy``, ``search/effective_pathways``,
    ``search/top{k}_share`` and, with ``log_pathways``, ``alpha_weight/<pathway>``.
    Per epoch: ``search/val_loss``, the metric a sweep optimises: the mean held-out loss of
    the epoch's searched steps over every rank, aggregated by a torchmetrics `MeanMetric`
    (its ``compute`` does the DDP reduction) and logged at the epoch end (`log_epoch`).

    In the progress bar only (`attach_progress_bar`: through the bar's ``get_metrics``,
    so neither a logger nor ``trainer.callback_metrics`` sees them): ``search_val`` (this
    step's held-out loss) and ``eff_paths`` (the effective, fractional, number of
    pathways ``exp(entropy)``, not a count; ``search/active_pathways`` is the count).

    Args:
        log_pathways: also log every pathway's weight (one series per pathway).
    """

    def __init__(self, log_pathways: bool = True) -> None:
        self.log_pathways = log_pathways
        self.last_summary: WeightSummary | None = None
        #: The progress-bar-only values (tensors are read when the bar refreshes).
        self.bar_status: dict[str, Tensor | float] = {}
        self._bar: tuple[Any, Any] | None = None  # the bar and its own get_metrics attribute
        #: The epoch's held-out losses (``search/val_loss``), reset by `log_epoch`.
        self.val_loss_mean = MeanMetric(nan_strategy="disable")  # a NaN loss stays NaN
        self._epoch_val: float | None = None

    def attach_progress_bar(self, trainer: pl.Trainer) -> None:
        """Show `bar_status` in the trainer's progress bar: its ``get_metrics`` (Lightning's
        hook for what a bar shows) returns them after its own metrics until
        `detach_progress_bar`."""
        self.detach_progress_bar()
        self.bar_status.clear()
        bar = trainer.progress_bar_callback
        if bar is None:
            return
        own, status = vars(bar).get("get_metrics"), self.bar_status
        original = bar.get_metrics

        def get_metrics(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
            shown = {k: float(v) for k, v in status.items()}
            return {**original(trainer, pl_module), **shown}

        bar.get_metrics = get_metrics
        self._bar = (bar, own)

    def detach_progress_bar(self) -> None:
        """Give the progress bar its own ``get_metrics`` back."""
        if self._bar is None:
            return
        (bar, own), self._bar = self._bar, None
        if own is None:
            vars(bar).pop("get_metrics", None)
        else:
            bar.get_metrics = own

    def log(self, module: Any, record: SearchRecord) -> None:
        """Log the metrics of one search step (``record``) through ``module.log``."""
        weights = module.alpha_weights(record.logits).detach()
        summary = weight_summary(
            weights, list(module.pathway_names), module.active_pathways(record.logits)
        )
        self.last_summary = summary
        log = module.log
        if record.val_loss is not None and record.hypergradient is not None:
            val = record.val_loss.detach().float()
            log("search/val_loss_step", val, on_step=True, on_epoch=False)
            self.val_loss_mean.to(val.device).update(val)
            self.bar_status["search_val"] = val
            norm = record.hypergradient.detach().float().norm()
            log("search/hypergrad_norm", norm, on_step=True, on_epoch=False)
        scalars = {
            "search/active_pathways": float(summary.active),
            "search/weight_entropy": summary.entropy,
            "search/effective_pathways": summary.effective,
            f"search/top{len(summary.top)}_share": summary.top_share,
        }
        for name, value in scalars.items():
            log(name, value, on_step=True, on_epoch=False)
        self.bar_status["eff_paths"] = summary.effective  # fractional: not a count
        if self.log_pathways:
            for name, w in zip(module.pathway_names, weights):
                log(f"alpha_weight/{name}", w, on_step=True, on_epoch=False)

    def log_epoch(self, module: Any) -> None:
        """At the end of a training epoch: ``search/val_loss``, the epoch's mean held-out loss
        over every rank (`MeanMetric`; every rank calls this, as its reduction needs), then a
        fresh aggregate. An epoch without a searched step logs nothing."""
        self._epoch_val = None
        if self.val_loss_mean.update_count == 0:
            return
        value = self.val_loss_mean.compute()
        self.val_loss_mean.reset()
        self._epoch_val = float(value)
        # already reduced over ranks: sync_dist only keeps Lightning's epoch-level check quiet
        module.log("search/val_loss", value, on_step=False, on_epoch=True, sync_dist=True)

    def epoch_end(self, trainer: pl.Trainer, process: DistillationProcess) -> None:
        """At the end of a training epoch: the process figures to every logger (images
        where a logger takes them, PNG files in its log directory otherwise) and one status
        line."""
        if len(process) == 0:
            return
        log_process_figures(trainer, process, "search/process")
        summary = self.last_summary
        if summary is not None:
            val = self._epoch_val
            top = ", ".join(f"{name} {share:.2f}" for name, share in summary.top)
            message = (
                f"DistPro search, epoch {trainer.current_epoch}: held-out loss "
                f"{'n/a' if val is None else f'{float(val):.4f}'}, active pathways "
                f"{summary.active}/{process.num_pathways}, effective {summary.effective:.1f}, "
                f"top: {top}"
            )
            bar = trainer.progress_bar_callback
            if bar is not None and hasattr(bar, "print") and trainer.is_global_zero:
                bar.print(message)  # above the bars, not into the tqdm line
            else:
                rank_zero_info(message)


def log_search_hyperparameters(
    trainer: pl.Trainer, config: Any, extra: dict[str, Any], module: Any = None
) -> None:
    """The search settings in every logger's hyperparameters, under ``search``, by the
    names the docs, the YAML and W&B sweeps use: the groups of ``config`` (a
    `SearchConfig`: ``search.alpha.lr``, ``search.schedule.every_n_steps``, ...), plus
    ``extra`` (e.g. ``share_training_forward_in_force``) and the pathway count."""
    values = {**plain(config), **extra}
    if module is not None:
        values["num_pathways"] = len(module.pathway_names)
    groups: dict[str, Any] = {"search": values}
    if hasattr(module, "distillation_group"):
        groups.update(module.distillation_group())
    for logger in trainer.loggers:
        logger.log_hyperparams(groups)


def log_process_artifact(
    trainer: pl.Trainer, path: str | os.PathLike[str] | None, process: DistillationProcess
) -> list[str]:
    """Log the process file at ``path`` as a W&B artifact (type ``distpro-process``) to every
    ``WandbLogger`` of the trainer (global rank 0); returns the artifact names."""
    if path is None or not trainer.is_global_zero or not os.path.isfile(path):
        return []
    from lightning.pytorch.loggers import WandbLogger

    names = []
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        name = f"process-{run.id}"
        metadata = {
            "steps": len(process),
            "pathways": process.num_pathways,
            "fingerprint": process.fingerprint(),
            "run_id": process.run_id,
            "search_val_loss": process.provenance.get("search_val_loss"),
        }
        artifact = wandb.Artifact(name, type="distpro-process", metadata=metadata)
        artifact.add_file(os.fspath(path), name="process.json")
        run.log_artifact(artifact)
        names.append(name)
    return names
