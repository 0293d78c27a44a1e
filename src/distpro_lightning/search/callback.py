"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from distpro_lightning.grouping import given_fields
from distpro_lightning.modules.checkpoints import CheckpointError
from distpro_lightning.modules.contract import SearchableModule
from distpro_lightning.modules.step_context import (
    install_step_context,
    release_step_context,
)
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.search.checks import (
    check_context_used,
    check_flag_and_source,
    check_not_all_pruned,
    check_setup,
    warn_extreme_settings,
    warn_if_collapsed,
    warn_if_never_searching,
    warn_on_gradient_clipping,
)
from distpro_lightning.search.diagnostics import SearchDiagnostics
from distpro_lightning.search.guard import UpdateGuard
from distpro_lightning.search.heldout import (
    HeldOutStream,
    concat_batches,
    held_out_loader,
    steps_per_epoch,
)
from distpro_lightning.search.hypergradient import Method
from distpro_lightning.search.output import (
    ProcessWriter,
    finish_search,
    save_on_exception,
)
from distpro_lightning.search.reporting import (
    SearchLogger,
    log_search_hyperparameters,
)
from distpro_lightning.search.settings import (
    AlphaConfig,
    HypergradientConfig,
    OutputConfig,
    ScheduleConfig,
    SearchConfig,
)
from distpro_lightning.search.state import (
    record_run_settings,
    record_search_size,
    search_state,
    start_process,
    warm_start_new_search,
)
from distpro_lightning.search.step import SearchRecord, SearchStep, hypergradient_of


class ProcessSearchCallback(Callback):
    """Learn the pathway logits ``a~_t`` by bi-level meta-optimization and record them.

    At every optimizer step, before the real update, a `SearchStep` on the training batch
    and the next held-out batch (`HeldOutStream`) computes the hypergradient of the
    held-out loss after a virtual step of the student (paper eqs. 4-5), averaged over DDP
    ranks, and updates ``module.alpha_logits``; the new logits are appended to `process`.
    The real update then uses ``w(a~_{t+1})`` and the search's teacher outputs and training
    forward (the module's `StepContext`). This class keeps the hooks, the logging
    (`SearchLogger`), the files (`ProcessWriter`) and the checkpoint state.

    ```python
    search = ProcessSearchCallback(alpha=AlphaConfig(lr=0.05))  # process.json in the log folder
    Trainer(max_epochs=40, callbacks=[search]).fit(module, datamodule=data)
    ```

    YAML (``distpro fit``): a ``search:`` section with the groups as nested keys
    (``search.alpha.lr``, ``search.schedule.every_n_steps``, ``search.output.save_path``).

    Args:
        hypergradient: how each step's hypergradient is computed (`HypergradientConfig`;
            a method name such as ``"exact"`` is a shorthand for its ``method``).
        alpha: how the pathway logits learn (`AlphaConfig`: lr, optimizer, betas, weight
            decay, a warm start from ``init_process``).
        schedule: when and on what the search runs (`ScheduleConfig`: warm-up, sparse
            search every k steps, proxy, held-out batches per step and seed, diagnostics,
            the non-finite-step limit).
        output: where the process goes (`OutputConfig`: ``save_path``, save cadence,
            overwrite, plots, per-pathway logging).
        held_out: ``None`` (the data module's ``search_val_dataloader()``), a method name of
            the data module, ``"val_dataloaders"`` (the validation loader of the fit: the one
            passed to ``trainer.fit(model, train_loader, val_loader)``, or the data module's),
            a ``DataLoader`` of held-out samples, or a data module whose
            ``train_dataloader()`` serves it. It must
            give one ``DataLoader`` with samples (a list of one is that loader; several, or
            none, are refused at fit start).
        enabled: ``False`` makes the callback inert (the CLI: on when ``search:`` has a key).
        **flat: the flat keywords of version 0.1 (``alpha_lr``, ``save_path``, ...),
            applied to their group with a ``FutureWarning`` (`search.settings.FLAT_KEYS`).

    A new fit starts a new process with a new ``run_id``; a fit resumed from a checkpoint
    continues the checkpoint's (its rows, skipped steps, run id and provenance). A resume
    with other settings applies them with a warning and records the change in the
    provenance (``settings_changes``).
    """

    #: It sets the module's pathway weights at every step (one such callback per Trainer).
    drives_pathway_weights = True

    def __init__(
        self,
        hypergradient: HypergradientConfig | Method = HypergradientConfig(),  # noqa: B008
        alpha: AlphaConfig = AlphaConfig(),  # noqa: B008
        schedule: ScheduleConfig = ScheduleConfig(),  # noqa: B008
        output: OutputConfig = OutputConfig(),  # noqa: B008
        held_out: str | pl.LightningDataModule | DataLoader | None = None,
        enabled: bool = True,
        **flat: Any,
    ) -> None:
        check_flag_and_source(enabled, held_out)
        defaults = inspect.signature(ProcessSearchCallback.__init__).parameters
        given = {"hypergradient": hypergradient, "alpha": alpha, "schedule": schedule}
        given["output"] = output
        explicit = {k: given_fields(v, defaults[k].default) for k, v in given.items()}
        if isinstance(hypergradient, str):  # the method alone: a documented shorthand
            hypergradient = HypergradientConfig(method=hypergradient)  # type: ignore[arg-type]
            explicit["hypergradient"] = frozenset({"method"})
        groups = SearchConfig.of(hypergradient, alpha, schedule, output)
        config = groups.with_flat(flat, explicit)
        self.config = config
        # the groups as given, read back as callback.alpha.lr etc. (never changed at run time)
        self.hypergradient: HypergradientConfig = config.hypergradient
        self.alpha: AlphaConfig = config.alpha
        self.schedule: ScheduleConfig = config.schedule
        self.output: OutputConfig = config.output
        out = config.output
        self.settings = config.search_settings()
        self.writer = ProcessWriter(
            out.save_path, out.save_every_n_steps, out.plot, out.save_every_epoch, out.overwrite
        )
        self.logger = SearchLogger(out.log_pathways)
        self.guard = UpdateGuard(config.schedule.max_non_finite_steps)
        self.run = config.run_options(held_out)
        self.enabled = enabled
        self.diagnostics: SearchDiagnostics | None = None
        self._figures_at: int | None = None
        self.search_val_loader: DataLoader | None = None
        self.process: DistillationProcess | None = None
        self.step: SearchStep | None = None
        self.held_out: HeldOutStream | None = None
        self._pending_state: dict[str, Any] | None = None
        self._resumed = False  # this fit continues a checkpoint's search
        self._record: SearchRecord | None = None  # this step's row, until its update is known
        self._collapse_warned = False

    @property
    def held_out_source(self) -> str | pl.LightningDataModule | DataLoader | None:
        """The ``held_out`` argument (``held_out`` itself is the stream during a fit)."""
        return self.run.held_out

    @property
    def skipped_updates(self) -> int:
        """Alpha updates skipped for a non-finite hypergradient in this fit."""
        return self.step.skipped_updates if self.step is not None else 0

    @property
    def process_path(self) -> Path | None:
        """The process file of the current fit (``save_path`` resolved at fit start)."""
        return self.writer.path

    # ------------------------------------------------------------------ the pure form
    def hypergradient_of(
        self, module: SearchableModule, train_batch: Any, val_batch: Any, lr: float
    ) -> Tensor:
        """Gradient w.r.t. ``module.alpha_logits`` of ``L_val(theta - lr * grad L_train)``
        (plain SGD virtual step), by this callback's method. Leaves parameters, ``.grad``,
        buffers and ``alpha_logits`` unchanged."""
        return hypergradient_of(module, train_batch, val_batch, lr, self.settings)

    # ------------------------------------------------------------------ setup
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        self.process, self._record, self._collapse_warned = None, None, False
        check_setup(trainer, pl_module, self.settings, self)
        module: Any = pl_module
        pending, self._pending_state = self._pending_state, None
        self._resumed = pending is not None
        warm = warm_start_new_search(module, self.run.init_process, pending is not None)
        if pending is None:
            check_not_all_pruned(module)
        reduce_mean = partial(trainer.strategy.reduce, reduce_op="mean")
        self.step = SearchStep(
            module,
            trainer.optimizers[0],
            self.settings,
            reduce_mean if trainer.world_size > 1 else None,
            precision=str(trainer.precision),  # the search's own passes run in fp32
        )
        loader = held_out_loader(trainer, self.held_out_source, self.search_val_loader)
        ranks = (trainer.world_size, trainer.global_rank)
        self.held_out = HeldOutStream(loader, self.run.seed, *ranks)
        self.guard = UpdateGuard(self.guard.max_non_finite_steps)
        self.guard.watch(self.step.buffers_before)  # the step's one snapshot of the buffers
        warn_extreme_settings(module, self.settings)
        warn_if_never_searching(trainer, self.run)
        warn_on_gradient_clipping(trainer)
        self.process = start_process(trainer, module, (self.step, self.held_out), pending, warm)
        record_run_settings(self.process, self.run.record(self.guard.max_non_finite_steps))
        record_search_size(self.process, trainer)
        self.writer.prepare(trainer, self.process.run_id)
        self.logger.attach_progress_bar(trainer)
        if self.run.diagnostics_every_n_steps:
            every = self.run.diagnostics_every_n_steps
            self.diagnostics = SearchDiagnostics(every, self.step.options)
            self.diagnostics.load_record(self.process.provenance.get("diagnostics", {}))
            second = HeldOutStream(loader, self.run.seed + 1_000_003, *ranks)  # independent
            self.diagnostics.draw_held_out = partial(self._draw, trainer, second)
        self._record_settings(trainer, module)

    def _record_settings(self, trainer: pl.Trainer, module: Any) -> None:
        """The requested settings and whether the shared forward is in force, the same in
        the provenance and in every logger's hyperparameters (at fit start and again when
        sharing stops)."""
        assert self.step is not None and self.process is not None
        in_force = self.step.sharing_forward
        self.process.provenance["share_training_forward_in_force"] = in_force
        extra = {"share_training_forward_in_force": in_force}
        log_search_hyperparameters(trainer, self.config, extra, module)

    # ------------------------------------------------------------------ the step
    def search_step(
        self, trainer: pl.Trainer, pl_module: SearchableModule, batch: Any, batch_idx: int = 0
    ) -> None:
        """One search step on ``batch``: update ``alpha_logits``; the row is recorded once
        the step's optimizer update is known (``on_before_optimizer_step``)."""
        assert self.step is not None and self.held_out is not None and self.process is not None
        self._commit(trainer)  # a row whose optimizer step never came
        if self.process.steps_per_epoch is None:
            self.process.steps_per_epoch = steps_per_epoch(trainer)
        step = trainer.global_step
        held_out = None
        if self.run.searches_at(step):  # else warm-up or a held step: alpha stays
            held_out = self._draw(trainer, self.held_out)
        record, context = self.step.run(batch, held_out, step, batch_idx)
        install_step_context(pl_module, context)
        if self.diagnostics is not None and self.diagnostics.diagnose_step(pl_module, record):
            self.process.provenance["diagnostics"] = self.diagnostics.to_record()
        self.logger.log(pl_module, record)
        self._record = record

    def _draw(self, trainer: pl.Trainer, stream: HeldOutStream) -> Any:
        """The next held-out batch, ``val_batches_per_step`` batches concatenated."""
        batches = [stream.next_batch() for _ in range(self.run.val_batches_per_step)]
        return trainer.strategy.batch_to_device(concat_batches(batches))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled and not self._resumed and trainer.global_step > 0:
            raise CheckpointError(
                f"ProcessSearchCallback would start a new search at step {trainer.global_step} "
                "of a resumed fit: the checkpoint holds no search state (it comes from a fit "
                "without this callback, e.g. a replay), so the process's rows would not line "
                "up with the training steps. Start the search at step 0: load the weights "
                "into the module instead of passing ckpt_path (e.g. "
                "DistProModule.load_from_checkpoint(path) or load_student), or resume the "
                "search run's own checkpoint."
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled or batch_idx % trainer.accumulate_grad_batches != 0:
            return
        self.search_step(trainer, pl_module, batch, batch_idx)  # type: ignore[arg-type]

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.enabled or self._record is None:
            return
        self._commit(trainer, self.guard.check_and_warn(optimizer, trainer.global_step))

    def _commit(self, trainer: pl.Trainer, update_skipped: bool = False) -> None:
        record, self._record = self._record, None
        if record is None or self.process is None:
            return
        non_finite = record.skipped or update_skipped
        self.process.append(record.logits, skipped=non_finite)
        self.guard.tally(non_finite)
        self.writer.step_written(trainer, self.process)
        self.guard.stop_if_exhausted(record.step, self._where())

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        ctx = getattr(pl_module, "step_context", None)
        if not self.enabled or ctx is None or ctx.batch_idx != batch_idx:
            return
        release_step_context(pl_module)
        if check_context_used(trainer, pl_module, ctx, outputs) and self.step is not None:
            self.step.stop_sharing_forward()
            if self.process is not None:
                self._record_settings(trainer, pl_module)

    # ------------------------------------------------------------------ output
    def save(self, trainer: pl.Trainer) -> None:
        """Write the process file (rank 0 only)."""
        if self.process is not None:
            self.writer.save(trainer, self.process)

    def _where(self) -> str:
        return repr(str(self.writer.path)) if self.writer.path else "no file (save_path=None)"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
        release_step_context(pl_module)  # a batch skipped by returning -1 never ended
        self._commit(trainer)
        self.logger.log_epoch(pl_module)
        if self.writer.save_every_epoch:
            self.writer.save(trainer, self.process)
        if self.writer.plot:
            self.logger.epoch_end(trainer, self.process)
            self._figures_at = trainer.global_step
        if not self._collapse_warned:
            self._collapse_warned = warn_if_collapsed(pl_module, self.settings.alpha_lr)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.enabled and self.process is not None:
            self._record = None  # its optimizer update did not happen
            release_step_context(pl_module)  # frees a kept graph
            save_on_exception(trainer, self.writer, self.process, exception)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
        release_step_context(pl_module)
        self._commit(trainer)
        figures_logged = self._figures_at == trainer.global_step
        finish_search(trainer, self.writer, self.process, figures_logged)
        if self.skipped_updates or self.guard.skipped:
            rank_zero_warn(
                f"DistPro search skipped {self.skipped_updates} non-finite alpha updates and "
                f"{self.guard.skipped} non-finite optimizer updates (rows "
                f"{self.process.skipped_steps[:10]} in skipped_steps)."
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.logger.detach_progress_bar()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.process is None or self.step is None or self.held_out is None:
            return {}
        return search_state(self.process, self.step, self.held_out)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict) if state_dict else None
