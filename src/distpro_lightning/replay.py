"""``ProcessScheduleCallback``: replay a searched distillation process in an ordinary fit."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distpro_lightning.modules.contract import (
    ReplayableModule,
    check_optimized,
    check_sole_weight_driver,
    missing_members,
)
from distpro_lightning.modules.run_length import planned_steps
from distpro_lightning.pathways.heads import KD_PATHWAY_NAME
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME
from distpro_lightning.process.core import DistillationProcess, ProcessFileError
from distpro_lightning.process.plots import log_process_figures
from distpro_lightning.process.weights import weight_summary


class ProcessScheduleCallback(Callback):
    """Set ``module.alpha_logits`` from a searched process at every optimizer step.

    * ``mode="process"`` (the paper): step ``t`` of a run of
      ``T = trainer.estimated_stepping_batches`` steps gets ``process.at(t, T)``, the
      linear interpolation of the searched rows. A run of unknown length (``max_time``
      alone, ``max_epochs=-1``, a loader without ``len()``) replays one row per step and
      holds the last, with a warning.
    * ``mode="final"``: every step gets the last searched row ("use alpha_T" ablation).
      Prefer ``"process"``: in the paired protocol (docs/quality.md) the searched process
      beat its own final weights held fixed, and final weights applied from the first step
      can destabilise a student (on wrn_16_2 -> mobilenet_v2, 5 seeds, the KD-pathway
      search's final weights, a KD weight of about 4.7 from step 0, left a collapsed
      student at 12.41 +- 3.23 % test top-1, where its process reached 81.40 +- 0.87 %).
    * ``mode="uniform"``: the module's normalisation is switched to ``uniform`` ("equally
      weighted" ablation); no process file is needed.

    The logits are never trained here. Indexing by ``trainer.global_step`` makes replay
    survive checkpoint resume; the process fingerprint is stored in checkpoints and a resume
    with a different process is refused. Pruning (``module.prune_threshold``) applies to the
    replayed logits, so pruned pathways cost nothing.

    Python:

    ```python
    from distpro_lightning import ProcessScheduleCallback
    replay = ProcessScheduleCallback(process="runs/search/process.json", mode="process")
    Trainer(max_epochs=240, callbacks=[replay]).fit(module, datamodule=dm)
    ```

    YAML:

    ```yaml
    trainer:
      callbacks:
        - class_path: distpro_lightning.ProcessScheduleCallback
          init_args: {process: runs/search/process.json, mode: process}
    ```

    Args:
        process: a process file path or a `DistillationProcess` (``None`` only with
            ``mode="uniform"``).
        mode: ``"process"``, ``"final"`` or ``"uniform"``.
        pathway_map: for transfer to a module with other pathway names: a dict from the
            module's pathway names to the process's, or ``"position"`` (same count, mapped in
            order). ``None`` requires the same names (in any order).
        strict: refuse a process whose normalisation differs from the module's; with
            ``strict=False`` the module's normalisation is kept and a warning is given.
        smooth_steps: replay the centred moving average of this many search rows (odd;
            1: the rows as searched), see `smoothed`.
        plot: log the replayed process (interpolated to the run) as figures at every
            epoch end (``figures/replay_process_<kind>_epoch<NNN>.png`` for a CSV logger,
            images for W&B and TensorBoard), and at the end of a fit stopped mid-epoch.
        log_pathways: log every pathway's weight, ``alpha_weight/<pathway>``, at the
            Trainer's ``log_every_n_steps``, as the search does (the summaries
            ``replay/...`` are always logged).
        enabled: ``False`` makes the callback inert (the ``distpro`` CLI sets it from its
            ``replay:`` section: on when any key of the section is given).
    """

    #: It sets the module's pathway weights at every step (one such callback per Trainer).
    drives_pathway_weights = True

    def __init__(
        self,
        process: str | None = None,
        mode: Literal["process", "final", "uniform"] = "process",
        pathway_map: dict[str, str] | str | None = None,
        strict: bool = True,
        smooth_steps: int = 1,
        plot: bool = True,
        enabled: bool = True,
        log_pathways: bool = True,
    ) -> None:
        self.enabled = enabled
        self.log_pathways = log_pathways
        self._figures_at: int | None = None  # the global step of the last figures
        self._row_epoch = 0  # the epoch of the last replayed row
        if not (isinstance(smooth_steps, int) and smooth_steps >= 1 and smooth_steps % 2 == 1):
            raise ValueError(f"smooth_steps must be an odd number >= 1, got {smooth_steps!r}.")
        self.smooth_steps = smooth_steps
        if mode not in ("process", "final", "uniform"):
            raise ValueError(f"mode must be 'process', 'final' or 'uniform', got {mode!r}.")
        if enabled and process is None and mode != "uniform":
            raise ValueError(
                f"mode={mode!r} needs a process file; only mode='uniform' runs without."
            )
        if enabled and process is not None and mode == "uniform":
            rank_zero_warn(
                "ProcessScheduleCallback(mode='uniform') gives every pathway the same weight "
                "and does not use process=...: it is not loaded. Drop it, or replay it with "
                "mode='process' (or 'final')."
            )
            process = None
        if enabled and mode == "uniform":
            given = {"pathway_map": pathway_map is not None, "strict": strict is not True}
            given["smooth_steps"] = smooth_steps != 1
            for name in (n for n, differs in given.items() if differs):
                rank_zero_warn(
                    f"ProcessScheduleCallback({name}=...) has no effect with mode='uniform' "
                    "(it shapes how a process file is replayed; none is). Drop it, or replay "
                    "a process with mode='process'."
                )
        if (
            pathway_map is not None
            and pathway_map != "position"
            and not isinstance(pathway_map, Mapping)
        ):
            raise ValueError(
                "pathway_map must be a dict from the module's pathway names to the process's, "
                f"'position' or None; got {pathway_map!r}."
            )
        #: the process file's path as given (``None`` for a process object)
        self.process_file = str(process) if isinstance(process, str | os.PathLike) else None
        if enabled and isinstance(process, str | os.PathLike):
            process = DistillationProcess.load(process)
        self.source: DistillationProcess | str | os.PathLike[str] | None = process
        self.mode = mode
        self.pathway_map = pathway_map
        self.strict = strict
        self.plot = plot
        self.process: DistillationProcess | None = None
        self._total_steps = 1
        self._resumed: dict[str, Any] = {}  # the checkpoint's replay state, applied at fit start
        self._replayed: list[torch.Tensor] = []

    def check(self, module: pl.LightningModule) -> DistillationProcess | None:
        """Check, without a Trainer, that this callback can replay on ``module``; returns the
        process with its columns in the module's pathway order (``None`` for
        ``mode="uniform"``). `on_fit_start` runs the same check.

        Raises ``TypeError`` for a module that is no `ReplayableModule` (one with
        `DistProMixin` is),
        `ProcessFileError` for pathways that do not match (see ``pathway_map``) or,
        with ``strict=True``, another normalisation or bias. Warns when the file's weight
        scale differs from the module's (the module's is used).
        """
        if not isinstance(module, ReplayableModule):
            missing = ", ".join(missing_members(module, ReplayableModule))
            raise TypeError(
                "ProcessScheduleCallback needs a module with DistProMixin (e.g. DistProModule); "
                f"got {type(module).__name__}, which lacks {missing}."
            )
        if self.mode == "uniform":
            return None
        if self.source is None:
            raise ValueError(f"mode={self.mode!r} needs a process file; none was given.")
        if isinstance(self.source, str | os.PathLike):
            self.source = DistillationProcess.load(self.source)
        try:
            process = self.source.remap(module.pathway_names, self.pathway_map)
        except ProcessFileError:
            fix = None if self.pathway_map is not None else other_space(self.source, module)
            if fix is None:
                raise
            raise ProcessFileError(fix) from None
        if self.smooth_steps > 1:
            if self.smooth_steps >= len(process):
                rank_zero_warn(
                    f"smooth_steps={self.smooth_steps} spans the whole process ({len(process)} "
                    "rows): the replay is close to a constant (every row averages almost all "
                    "rows). Use a window well below the process length, or mode='final'."
                )
            process = process.smoothed(self.smooth_steps)
        norm = process.normalization
        other_bias = (  # only the biased softmax has a bias
            module.normalization == "biased_softmax"
            and float(norm["bias"]) != module.normalization_bias
        )
        if norm["name"] != module.normalization or other_bias:
            msg = (
                f"The process was searched with normalization {norm['name']!r} (bias "
                f"{norm['bias']}) but the module uses {module.normalization!r} (bias "
                f"{module.normalization_bias})."
            )
            if self.strict:
                raise ProcessFileError(
                    msg + " Configure the module the same way or pass strict=False."
                )
            rank_zero_warn(msg + " Keeping the module's normalisation (strict=False).")
        _warn_on_scale(float(norm["scale"]), module)
        _check_replay_pruning(process, module.prune_threshold, self.mode)
        _warn_on_kd_temperature(process, getattr(module, "kd_temperature", None))
        if self.mode == "final":
            _warn_on_final_response_pathways(process)
        return process

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        check_sole_weight_driver(trainer.callbacks, self)
        self.process = self.check(pl_module)
        check_optimized(pl_module, trainer.optimizers, "ProcessScheduleCallback")  # type: ignore[arg-type]
        if self.process is None:
            assert isinstance(pl_module, ReplayableModule)
            _check_uniform_pruning(pl_module.prune_threshold)
            pl_module.normalization = "uniform"
            pl_module.alpha_logits.fill_(1.0)
            self._log_hyperparameters(trainer, pl_module, None)
            rank_zero_info("DistPro replay: equally weighted pathways (normalization='uniform').")
            return
        fingerprint = self.process.fingerprint()
        self._check_resume(fingerprint)
        total = planned_steps(trainer)
        self._total_steps = total if total is not None else len(self.process)
        if total is None and self.mode == "process" and "total_steps" not in self._resumed:
            warn_unknown_length(len(self.process))
        resumed_total = self._resumed.get("total_steps")
        if resumed_total is not None and resumed_total != self._total_steps:
            rank_zero_warn(
                f"DistPro replay resumed with another run length ({self._total_steps} steps now, "
                f"{resumed_total} when the checkpoint was written): the process keeps the "
                "checkpoint's stretch, so the steps already trained and the rest follow one "
                "schedule. Start a new fit to replay it over another length."
            )
            self._total_steps = int(resumed_total)
        warn_on_stretch(self.process, self._total_steps)
        self._log_hyperparameters(trainer, pl_module, fingerprint)
        rank_zero_info(
            f"DistPro replay: mode={self.mode}, {len(self.process)} searched steps -> "
            f"{self._total_steps} steps (fingerprint {fingerprint})."
        )

    def logits_at(self, step: int) -> torch.Tensor:
        """The logits this callback sets at optimizer step ``step``."""
        assert self.process is not None
        if self.mode == "final":
            return self.process.final()
        return self.process.at(step, self._total_steps)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (
            not self.enabled
            or self.mode == "uniform"
            or batch_idx % trainer.accumulate_grad_batches != 0
        ):
            return
        row = self.logits_at(trainer.global_step)
        with torch.no_grad():
            pl_module.alpha_logits.copy_(row.to(pl_module.alpha_logits.device))
        if self.plot:
            self._replayed.append(row)
            self._row_epoch = trainer.current_epoch
        module: Any = pl_module
        weights = module.alpha_weights().detach()
        summary = weight_summary(weights, module.pathway_names, module.active_pathways())
        if self.log_pathways:
            for name, w in zip(module.pathway_names, weights.tolist()):
                pl_module.log(f"alpha_weight/{name}", w, on_step=True, on_epoch=False)
        # scalars a run table compares across process / final / uniform replays
        pl_module.log("replay/active_pathways", float(summary.active))
        pl_module.log("replay/effective_pathways", summary.effective)
        pl_module.log("replay/top3_share", summary.top_share)

    def _log_hyperparameters(
        self, trainer: pl.Trainer, module: Any, fingerprint: str | None
    ) -> None:
        """The replay's identity in every logger's hyperparameters (``replay``: file, mode,
        fingerprint, smoothing, stretch; ``None`` where ``mode="uniform"`` has none), and a
        mixin module's ``distillation`` group, so runs can be told apart in a run table."""
        values = {
            "process": self.process_file,
            "mode": self.mode,
            "fingerprint": fingerprint,
            "smooth_steps": self.smooth_steps,
            "searched_steps": None if self.process is None else len(self.process),
            "replay_steps": None if self.process is None else self._total_steps,
            "num_pathways": len(module.pathway_names),
        }
        extra = module.distillation_group()
        for logger in trainer.loggers:
            logger.log_hyperparams({"replay": values, **extra})

    def _log_figures(self, trainer: pl.Trainer, epoch: int) -> None:
        """The replayed rows so far as figures of ``epoch`` (once per global step)."""
        if not self.enabled or not self.plot or not self._replayed or self.process is None:
            return
        if self._figures_at == trainer.global_step:
            return
        replayed = self.process.with_rows(torch.stack(self._replayed))
        log_process_figures(trainer, replayed, "replay/process", epoch)
        self._figures_at = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_figures(trainer, trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_figures(trainer, self._row_epoch)  # a fit stopped mid-epoch

    def _check_resume(self, fingerprint: str) -> None:
        """A resumed replay continues the checkpoint's: the same mode and smoothing (refused
        otherwise, naming the setting), the same process (by fingerprint)."""
        resumed = self._resumed
        for key, now in (("mode", self.mode), ("smooth_steps", self.smooth_steps)):
            if key in resumed and resumed[key] != now:
                raise ProcessFileError(
                    f"Resuming a replay trained with {key}={resumed[key]!r} with {key}={now!r}: "
                    f"the schedule would switch mid-run. Resume with {key}={resumed[key]!r}, or "
                    "start a new fit for the other setting."
                )
        resumed = self._resumed.get("fingerprint")
        if resumed is not None and resumed != fingerprint:
            raise ProcessFileError(
                f"Resuming with a different process (fingerprint {fingerprint}) than the one the "
                f"checkpoint was trained with ({resumed}). Use the same file."
            )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mode": self.mode, "smooth_steps": self.smooth_steps}
        if self.process is None:
            return state
        return {
            **state,
            "fingerprint": self.process.fingerprint(),
            "total_steps": self._total_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed = dict(state_dict)


def other_space(process: DistillationProcess, module: Any) -> str | None:
    """The refusal of a process searched in another search space than ``module``'s,
    naming the settings the process file records (transforms, the KD and review pathways,
    the taps) to build the module with; ``None`` when it records none that differ (a
    transfer then needs ``pathway_map``)."""
    names = set(process.pathway_names)
    theirs = {
        "transforms": process.transform_kinds,
        "response_kd": KD_PATHWAY_NAME in names,
        "review_kd": REVIEW_PATHWAY_NAME in names,
        "student_taps": process.student_taps,
        "teacher_taps": process.teacher_taps,
    }
    ours = {
        "transforms": list(module.transform_kinds),
        "response_kd": bool(module.response_kd),
        "review_kd": bool(getattr(module, "review_kd", False)),
        "student_taps": list(module.student_tap_names),
        "teacher_taps": list(module.teacher_tap_names),
    }
    differ = {k: v for k, v in theirs.items() if v is not None and v != ours[k]}
    if not differ:
        return None
    settings = ", ".join(f"distillation.{k}={v!r}" for k, v in differ.items())
    return (
        f"The process was searched in another search space than this module's: it has "
        f"{process.num_pathways} pathways, the module {module.num_pathways}. Build the module "
        f"with the settings the process file records: {settings} (the module has "
        + ", ".join(f"{k}={ours[k]!r}" for k in differ)
        + "). To transfer it to other pathways on purpose, pass pathway_map (a dict from the "
        "module's names to the process's, or 'position')."
    )


def _warn_on_scale(file_scale: float, module: ReplayableModule) -> None:
    module_scale = float(module.weight_scale)
    if math.isclose(file_scale, module_scale, rel_tol=1e-6):
        return
    fix = "Set the module's scale_by_num_pathways as in the search"
    if hasattr(module, "kd_weight_for_scale"):  # `DistProMixin`: the exact setting
        fix += f" or kd_weight={module.kd_weight_for_scale(file_scale):.12g}"
    rank_zero_warn(
        f"The process was searched with weight scale {file_scale:g} but the module scales the "
        f"pathway weights by {module_scale:g}: the replayed weights are {module_scale / file_scale:.3g}"
        f" times the searched ones. {fix}, unless the difference is meant (e.g. a transfer to "
        "another number of pathways)."
    )


def _check_replay_pruning(process: DistillationProcess, tau: float | None, mode: str) -> None:
    """Refuse a replay whose ``prune_threshold`` prunes every pathway at every replayed row
    (nothing would be distilled, as the search and ``mode="uniform"`` refuse); warn when it
    does so at some rows only."""
    if tau is None:
        return
    rows = process.logits[-1:] if mode == "final" else process.logits
    empty = int((rows <= tau).all(dim=1).sum())
    if empty == len(rows):
        raise ValueError(
            f"distillation.prune_threshold={tau:g} prunes every pathway at every replayed row "
            f"(mode={mode!r}; the process's largest logit is {float(rows.max()):.4g}): "
            "nothing would be distilled. Use a threshold below it, or none."
        )
    if empty:
        rank_zero_warn(
            f"distillation.prune_threshold={tau:g} prunes every pathway at {empty} of the "
            f"process's {len(rows)} rows: those stretches of the replay distil nothing (task "
            "loss only). Lower the threshold if that is not meant."
        )


def _warn_on_kd_temperature(process: DistillationProcess, temperature: float | None) -> None:
    """Warn when the KD pathway is replayed at another temperature than it was searched at
    (the provenance's ``kd_temperature``): its searched weights fit the other loss scale."""
    searched = process.provenance.get("kd_temperature")
    if KD_PATHWAY_NAME not in process.pathway_names or temperature is None:
        return
    if isinstance(searched, int | float) and not math.isclose(searched, temperature):
        rank_zero_warn(
            f"The process's KD pathway was searched with kd_temperature={searched:g}, the "
            f"module replays it with distillation.kd_temperature={temperature:g}: the "
            "searched weights were chosen for the other temperature's loss. Set "
            f"distillation.kd_temperature={searched:g} to replay the search as it was."
        )


def _warn_on_final_response_pathways(process: DistillationProcess) -> None:
    """``mode="final"`` with the KD or ReviewKD pathway: their final weights, from step 0,
    collapsed a student in the paired protocol (docs/quality.md)."""
    kinds = [n for n in (KD_PATHWAY_NAME, REVIEW_PATHWAY_NAME) if n in process.pathway_names]
    if kinds:
        rank_zero_warn(
            f"ProcessScheduleCallback(mode='final') with the {' and '.join(kinds)} pathway: "
            "its final weight applied from the first step can collapse the student (5 seeds, "
            "wrn_16_2 -> mobilenet_v2: 12.41 % test top-1 against 81.40 % replaying the "
            "process; docs/quality.md). Prefer mode='process'."
        )


#: A replay longer than this many times its process warns unless the search was a proxy.
STRETCH_WARNING_FACTOR = 4.0


def _check_uniform_pruning(threshold: float | None) -> None:
    """Equal weights hold every pathway's logit at 1.0: a threshold below it prunes nothing
    (said), one at or above it would prune every pathway (refused)."""
    if threshold is None:
        return
    if threshold >= 1.0:
        raise ValueError(
            f"prune_threshold={threshold} (distillation.prune_threshold) prunes every pathway "
            "with mode='uniform', which holds every logit at 1.0: nothing would be distilled. "
            "Set prune_threshold=None (or below 1.0)."
        )
    rank_zero_info(
        f"DistPro replay: prune_threshold={threshold} prunes nothing with mode='uniform' "
        "(every logit is 1.0, above it)."
    )


def warn_unknown_length(rows: int) -> None:
    """Warn that a run of unknown length (`planned_steps` is ``None``) cannot
    stretch the process: it is replayed one row per optimizer step, its last row held
    after."""
    rank_zero_warn(
        "DistPro replay: the run's length is unknown (Trainer(max_time=...) without "
        "max_epochs or max_steps, max_epochs=-1, or a training loader without len()), so the "
        f"process cannot be stretched over it: its {rows} rows are replayed one per optimizer "
        "step, and the last row is held after that. Set max_steps (or max_epochs with a "
        "loader that has a length) to stretch it over the run."
    )


def warn_on_stretch(process: DistillationProcess, total_steps: int) -> None:
    """Warn when a replay stretches a process by more than `STRETCH_WARNING_FACTOR` and the
    search did not record itself as a proxy (``ProcessSearchCallback(schedule={"proxy": True})``): rows
    chosen for a half-trained student would then drive the end of training."""
    factor = total_steps / max(len(process), 1)
    proxy = bool(process.provenance.get("run_settings", {}).get("proxy", False))
    if factor > STRETCH_WARNING_FACTOR and not proxy:
        rank_zero_warn(
            f"DistPro replay stretches a process of {len(process)} steps over {total_steps} "
            f"steps ({factor:.1f}x). If the search was meant as a short proxy of this run, "
            "search with ProcessSearchCallback(schedule={'proxy': True}) (--search.schedule.proxy "
            "true), which records "
            "it; otherwise search over the same epochs and schedule as this run."
        )
