"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from distpro_lightning.modules.contract import SearchableModule
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.search.checks import (
    SearchRunOptions,
    check_context_used,
    check_setup,
    search_autocast,
    shared_forward_settings,
    warn_extreme_settings,
    warn_if_collapsed,
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
    AUTO_PATH,
    ProcessWriter,
    finish_search,
    save_on_exception,
)
from distpro_lightning.search.reporting import (
    SearchLogger,
    log_search_hyperparameters,
    warn_deprecated_log_every,
)
from distpro_lightning.search.state import (
    record_run_settings,
    record_search_size,
    search_state,
    start_process,
    warm_start_new_search,
)
from distpro_lightning.search.step import SearchRecord, SearchSettings, SearchStep, hypergradient_of


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
    search = ProcessSearchCallback(alpha_lr=0.05)  # process.json in the run's log folder
    Trainer(max_epochs=40, callbacks=[search]).fit(module, datamodule=data)
    ```

    YAML (``distpro fit``): a ``search:`` section with these keys (flat sweep keys such as
    ``--search.alpha_lr 0.1`` work too).

    Args:
        hypergradient: ``"finite_difference"`` (central, paper: two forwards at
            ``theta +- eps v``), ``"forward_difference"`` (one forward at ``theta + eps v``;
            ``O(eps)`` error) or ``"exact"`` (one forward-mode JVP).
        alpha_lr: learning rate of the logits' optimizer.
        alpha_optimizer: ``"adam"`` (paper; betas ``alpha_betas``) or ``"sgd"``.
        alpha_betas: Adam betas (the official release uses ``(0.5, 0.999)``).
        alpha_weight_decay: weight decay on the logits.
        epsilon: finite-difference radius; ``eps = epsilon / ||v||``.
        save_path: the process file (JSON, atomic, rank 0). ``"auto"``: ``process.json`` in
            the run's log folder (as ``ModelCheckpoint`` picks its ``dirpath``); ``{log_dir}``
            in a path is replaced by that folder; ``None``: not written. Checked at fit start
            (writable, not another run's file); the PNG plots go beside it.
        save_every_n_steps: also write it every n steps (0: not by step count).
        save_every_epoch: also write it at every epoch end (always on an exception).
        overwrite: replace another run's process file at ``save_path`` (else refused).
        max_non_finite_steps: stop after this many consecutive non-finite steps (0: never);
            each one's real update is skipped and its row listed in ``skipped_steps``.
        log_every_n_steps: deprecated, unused: the Trainer's ``log_every_n_steps`` applies.
        warmup_steps: optimizer steps before alpha starts moving (rows still recorded).
        average_virtual_gradient: under DDP, average the virtual step's gradient over ranks.
        average_val_gradient: under DDP, average ``v`` over ranks (with both averages: a
            one-process search on the union of the batches, exactly without BatchNorm).
        reuse_training_gradient: the real update reuses the virtual step's training
            gradient (one forward+backward fewer, one step of lag: ``w(a~_t)``); needs a
            module that applies it (``applies_reused_gradient``, e.g. `DistProModule`).
        share_training_forward: the real update backpropagates ``w(a~_{t+1})`` through the
            virtual step's training forward (same theta and batch, graph kept): exact, one
            forward fewer. Via ``training_loss``/``distill``; off under ``16-mixed`` and with
            ``compile_heads=True`` (said at fit start).
        seed: seed of the held-out order (cycle ``c`` uses ``seed + c``).
        init_process: a process file whose last row starts a new search's logits (same
            pathways); a resume keeps the checkpoint's, with a warning.
        val_batches_per_step: held-out batches per step, concatenated: ``v`` and the
            hypergradient are their average (exactly so without BatchNorm).
        diagnostics_every_n_steps: diagnose every n steps (`diagnostics`; 0: off).
        held_out: ``None`` (the data module's ``search_val_dataloader()``), a method name of
            the data module, or a data module whose ``train_dataloader()`` serves it.
        plot: write the plots at the end and log them at every epoch end.
        log_pathways: also log ``alpha_weight/<pathway>``; the summaries are always logged.
        enabled: ``False`` makes the callback inert (the CLI: on when ``search:`` has a key).
        search_every_n_steps: sparse search: alpha is updated at every k-th optimizer step
            (after the warm-up) and held in between, where the step costs a replay step
            (the teacher's outputs still computed once). A row is recorded at every step, so
            the process keeps the true step axis; ``1`` (default) searches every step.
        proxy: this search is a proxy (a fraction of the data and/or epochs) meant to be
            replayed stretched on a longer run; recorded in the provenance, so a replay
            that stretches it by a large factor does not warn.

    A new fit starts a new process with a new ``run_id``; a fit resumed from a checkpoint
    continues the checkpoint's (its rows, skipped steps, run id and provenance). A resume
    with other settings applies them with a warning and records the change in the
    provenance (``settings_changes``).
    """

    def __init__(
        self,
        hypergradient: Method = "finite_difference",
        alpha_lr: float = 0.05,
        alpha_optimizer: Literal["adam", "sgd"] = "adam",
        alpha_betas: tuple[float, float] = (0.5, 0.999),
        alpha_weight_decay: float = 0.0,
        epsilon: float = 0.01,
        save_path: str | None = AUTO_PATH,
        save_every_n_steps: int = 100,
        log_every_n_steps: int | None = None,
        warmup_steps: int = 0,
        average_virtual_gradient: bool = True,
        average_val_gradient: bool = True,
        reuse_training_gradient: bool = False,
        share_training_forward: bool = True,
        seed: int = 0,
        init_process: str | None = None,
        val_batches_per_step: int = 1,
        diagnostics_every_n_steps: int = 0,
        plot: bool = True,
        enabled: bool = True,
        log_pathways: bool = True,
        held_out: str | pl.LightningDataModule | None = None,
        save_every_epoch: bool = True,
        overwrite: bool = False,
        max_non_finite_steps: int = 10,
        search_every_n_steps: int = 1,
        proxy: bool = False,
    ) -> None:
        self.settings = SearchSettings(
            hypergradient, epsilon, alpha_lr, alpha_optimizer, tuple(alpha_betas),
            alpha_weight_decay, average_virtual_gradient, average_val_gradient,
            reuse_training_gradient, share_training_forward,
        )  # fmt: skip
        self.writer = ProcessWriter(
            save_path, save_every_n_steps, plot, save_every_epoch, overwrite
        )
        warn_deprecated_log_every(log_every_n_steps)
        self.logger = SearchLogger(log_pathways)
        self.guard = UpdateGuard(max_non_finite_steps)
        self.run = SearchRunOptions(
            warmup_steps, seed, init_process, val_batches_per_step, diagnostics_every_n_steps,
            held_out, search_every_n_steps, proxy,
        )  # fmt: skip
        self.enabled = enabled
        self.diagnostics: SearchDiagnostics | None = None
        self._figures_at: int | None = None
        self.search_val_loader: DataLoader | None = None
        self.process: DistillationProcess | None = None
        self.step: SearchStep | None = None
        self.held_out: HeldOutStream | None = None
        self._pending_state: dict[str, Any] | None = None
        self._record: SearchRecord | None = None  # this step's row, until its update is known
        self._collapse_warned = False

    def __getattr__(self, name: str) -> Any:
        # the constructor's arguments read back, e.g. ``callback.alpha_lr``
        for part in ("settings", "run", "writer", "logger", "guard"):
            holder = self.__dict__.get(part)
            if holder is not None and name in vars(holder):
                return vars(holder)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def held_out_source(self) -> str | pl.LightningDataModule | None:
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
        check_setup(trainer, pl_module, self.settings)
        module: Any = pl_module
        pending, self._pending_state = self._pending_state, None
        warm = warm_start_new_search(module, self.run.init_process, pending is not None)
        reduce_mean = partial(trainer.strategy.reduce, reduce_op="mean")
        self.step = SearchStep(
            module,
            trainer.optimizers[0],
            shared_forward_settings(trainer, self.settings),
            reduce_mean if trainer.world_size > 1 else None,
            search_autocast(trainer, self.settings),
        )
        loader = self.search_val_loader or held_out_loader(trainer, self.held_out_source)
        ranks = (trainer.world_size, trainer.global_rank)
        self.held_out = HeldOutStream(loader, self.run.seed, *ranks)
        self.guard = UpdateGuard(self.guard.max_non_finite_steps)
        warn_extreme_settings(module, self.settings)
        self.process = start_process(trainer, module, (self.step, self.held_out), pending, warm)
        record_run_settings(self.process, self.run.record(self.guard.max_non_finite_steps))
        record_search_size(self.process, trainer)
        self.writer.prepare(trainer, self.process.run_id)
        if self.run.diagnostics_every_n_steps:
            every = self.run.diagnostics_every_n_steps
            self.diagnostics = SearchDiagnostics(every, self.step.options)
            self.diagnostics.load_record(self.process.provenance.get("diagnostics", {}))
            second = HeldOutStream(loader, self.run.seed + 1_000_003, *ranks)  # independent
            self.diagnostics.draw_held_out = partial(self._draw, trainer, second)
        log_search_hyperparameters(
            trainer,
            self.step.settings,
            {"warmup_steps": self.run.warmup_steps, "seed": self.run.seed},
            module,
        )

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
        self.guard.snapshot((pl_module.student, pl_module.distill_heads))
        step = trainer.global_step
        held_out = None
        if self.run.searches_at(step):  # else warm-up or a held step: alpha stays
            held_out = self._draw(trainer, self.held_out)
        diagnostics = self.diagnostics if held_out is not None else None
        old_logits = pl_module.alpha_logits.detach().clone() if diagnostics else None
        record = self.step(batch, held_out, step, batch_idx)
        if diagnostics and diagnostics.diagnose_step(
            pl_module, self.step.optimizer, (batch, held_out), record, old_logits
        ):
            self.process.provenance["diagnostics"] = diagnostics.to_record()
        self.logger.log(pl_module, record)
        self._record = record

    def _draw(self, trainer: pl.Trainer, stream: HeldOutStream) -> Any:
        """The next held-out batch, ``val_batches_per_step`` batches concatenated."""
        batches = [stream.next_batch() for _ in range(self.run.val_batches_per_step)]
        return trainer.strategy.batch_to_device(concat_batches(batches))

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
        pl_module.step_context = None
        if check_context_used(trainer, pl_module, ctx, outputs) and self.step is not None:
            self.step.stop_sharing_forward()
            if self.process is not None:
                self.process.provenance["share_training_forward_in_force"] = False

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
        pl_module.step_context = None  # a batch skipped by returning -1 never ended
        self._commit(trainer)
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
            pl_module.step_context = None  # frees a kept graph
            save_on_exception(trainer, self.writer, self.process, exception)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
        pl_module.step_context = None
        self._commit(trainer)
        figures_logged = self._figures_at == trainer.global_step
        finish_search(trainer, self.writer, self.process, figures_logged)
        if self.skipped_updates or self.guard.skipped:
            rank_zero_warn(
                f"DistPro search skipped {self.skipped_updates} non-finite alpha updates and "
                f"{self.guard.skipped} non-finite optimizer updates (rows "
                f"{self.process.skipped_steps[:10]} in skipped_steps)."
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.process is None or self.step is None or self.held_out is None:
            return {}
        return search_state(self.process, self.step, self.held_out)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict) if state_dict else None
