"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from .contract import SearchableModule
from .diagnostics import SearchDiagnostics
from .heldout import HeldOutStream, concat_batches, held_out_loader, steps_per_epoch
from .outputs import new_run_id
from .process import DistillationProcess
from .search_checks import check_setup, warn_extreme_settings, weights_collapsed
from .search_guard import NonFiniteStepError, UpdateGuard
from .search_logging import SearchLogger, log_search_hyperparameters
from .search_output import (
    AUTO_PATH,
    ProcessWriter,
    finish_search,
    save_on_exception,
    search_provenance,
)
from .search_state import restore_search, search_state
from .search_step import SearchRecord, SearchSettings, SearchStep, hypergradient_of
from .sweeps import with_log_dir
from .transfer import warm_start


class ProcessSearchCallback(Callback):
    """Learn the pathway logits ``a~_t`` by bi-level meta-optimization and record them.

    At every optimizer step, before the real update, it runs a
    `SearchStep` on the training batch and the next
    held-out batch (`HeldOutStream`): the hypergradient of
    the held-out loss after a virtual step of the student (paper eqs. 4-5), averaged over
    DDP ranks, updates ``module.alpha_logits`` with its own optimizer, and the new logits
    are appended to `process`. The real update then uses ``w(a~_{t+1})`` and reuses
    the teacher features computed for the search (the module's
    `StepContext`). This class keeps the hooks, the
    checks, the logging (`SearchLogger`), the files
    (`ProcessWriter`) and the checkpoint state.

    ```python
    search = ProcessSearchCallback(alpha_lr=0.05)  # process.json in the run's log folder
    Trainer(max_epochs=40, callbacks=[search]).fit(module, datamodule=data)
    ```

    YAML (``distpro fit``; flat sweep keys such as ``--search.alpha_lr 0.1``):

    ```yaml
    search:
      alpha_lr: 0.05
    ```

    Args:
        hypergradient: ``"finite_difference"`` (two forward passes at ``theta +- eps v``)
            or ``"exact"`` (one forward-mode JVP, ``torch.func.jvp``).
        alpha_lr: learning rate of the logits' optimizer.
        alpha_optimizer: ``"adam"`` (paper; betas ``alpha_betas``) or ``"sgd"``.
        alpha_betas: Adam betas (the official release uses ``(0.5, 0.999)``).
        alpha_weight_decay: weight decay on the logits.
        epsilon: finite-difference radius; ``eps = epsilon / ||v||``.
        save_path: where the process is written (JSON, atomically, rank 0). ``"auto"``
            (default): ``process.json`` in the run's log folder, chosen as ``ModelCheckpoint``
            chooses its ``dirpath`` (`default_process_path`);
            ``None``: not written. ``{log_dir}`` in a path is replaced by the run's log
            directory (`run_log_dir`). Checked at fit start: a path that cannot be written, or
            that holds another run's process, is refused before any compute. The PNG plots
            (`plot_paths`) are written beside it at the end.
        save_every_n_steps: also write it every n steps (0: not by step count).
        save_every_epoch: also write it at the end of every training epoch. With it (and on
            any exception, Ctrl-C included, where it is always written) a crash or kill
            loses at most one epoch, or ``save_every_n_steps`` steps if fewer.
        overwrite: replace an existing process file of another run at ``save_path``
            (otherwise refused; the file of the run being resumed is always replaced).
        max_non_finite_steps: stop with an error after this many consecutive steps with a
            non-finite training loss/gradient or hypergradient (0: never). Each such step's
            real update is skipped and its row is marked in ``skipped_steps``.
        log_every_n_steps: deprecated and unused: the metrics follow the Trainer's
            ``log_every_n_steps`` (see `SearchLogger`).
        warmup_steps: optimizer steps before alpha starts moving (rows are still recorded).
        average_virtual_gradient: under DDP, average the virtual step's training gradient
            over ranks (one all-reduce of the student's gradient per step), so the virtual
            step matches the real one.
        average_val_gradient: under DDP, average the held-out gradient ``v`` over ranks
            (another all-reduce of the student's gradient size). With both averages on, a
            DDP search equals a one-process search on the union of the ranks' batches
            (exactly so for models without BatchNorm); off, each rank's mixed derivative
            uses its own ``v`` and only the hypergradients are averaged.
        reuse_training_gradient: use the virtual step's training gradient for the real update
            (one forward+backward fewer per step, at the price of a one-step lag: the update
            uses ``w(a~_t)`` instead of ``w(a~_{t+1})``). Needs a module whose
            ``training_step`` applies it (``applies_reused_gradient``, e.g.
            `DistProModule`).
        seed: seed of the held-out batch order (cycle ``c`` uses ``seed + c``).
        init_process: a process file whose last row starts the logits of a new search (a
            second search pass warm-started from the first pass's alpha_T); its pathways
            must be the module's. Ignored on resume (the checkpoint's logits win).
        val_batches_per_step: held-out batches per step, concatenated into one batch: the
            held-out gradient ``v`` (and so the hypergradient, which is linear in ``v``) is
            the average over them (exactly so without BatchNorm, whose batch statistics see
            the larger batch).
        diagnostics_every_n_steps: every n steps, measure the search signal
            (`diagnostics`: agreement of the hypergradient on a
            second held-out batch, cosine with the previous step's, held-out loss after the
            real update at the old and new logits); stored in the process file's
            ``provenance["diagnostics"]``. 0: off.
        held_out: where the held-out batches come from: ``None``, the data module's
            ``search_val_dataloader()``; a method name of the data module (e.g.
            ``"val_dataloader"`` for your own data module whose validation split is held
            out from training); or a data module (in YAML ``{class_path: ..., init_args:
            ...}``) whose ``train_dataloader()`` serves the held-out data. In Python a
            ``DataLoader`` may also be set as ``callback.search_val_loader``.
        plot: write the process plots beside the file at the end of fit, and send them to
            the loggers at every epoch end (as images, or as PNG files in the log directory
            of loggers without images, e.g. CSV).
        log_pathways: also log every pathway's weight (``alpha_weight/<pathway>``, one series
            per pathway); the summaries (active pathways, weight entropy, top-k share) are
            always logged.
        enabled: ``False`` makes the callback inert (the ``distpro`` CLI sets it from its
            ``search:`` section: on when any key of the section is given).

    A new fit starts a new process with a new ``run_id``; a fit resumed from a checkpoint
    continues the checkpoint's (its rows, skipped steps, run id and provenance). A resume
    with other settings applies them with a warning and records the change in the
    provenance (``settings_changes``).
    """

    def __init__(
        self,
        hypergradient: Literal["finite_difference", "exact"] = "finite_difference",
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
    ) -> None:
        self.settings = SearchSettings(
            hypergradient, epsilon, alpha_lr, alpha_optimizer, tuple(alpha_betas),
            alpha_weight_decay, average_virtual_gradient, average_val_gradient,
            reuse_training_gradient,
        )  # fmt: skip
        self.writer = ProcessWriter(
            save_path, save_every_n_steps, plot, save_every_epoch, overwrite
        )
        if log_every_n_steps is not None:
            rank_zero_warn(
                f"ProcessSearchCallback(log_every_n_steps={log_every_n_steps}) is deprecated and "
                "ignored: the search metrics follow Trainer(log_every_n_steps=...). Remove the "
                "argument (search.log_every_n_steps in configs); use log_pathways=False to drop "
                "the per-pathway series.",
                category=FutureWarning,
            )
        self.logger = SearchLogger(log_pathways)
        self.guard = UpdateGuard(max_non_finite_steps)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.warmup_steps = warmup_steps
        if val_batches_per_step < 1 or diagnostics_every_n_steps < 0:
            raise ValueError(
                f"val_batches_per_step must be >= 1 and diagnostics_every_n_steps >= 0, got "
                f"{val_batches_per_step} and {diagnostics_every_n_steps}."
            )
        self.init_process = init_process
        self.val_batches_per_step = val_batches_per_step
        self.diagnostics_every_n_steps = diagnostics_every_n_steps
        self.diagnostics: SearchDiagnostics | None = None
        self._second_held_out: HeldOutStream | None = None
        self.held_out_source = held_out
        self._figures_at: int | None = None
        self.seed = seed
        self.enabled = enabled
        self.search_val_loader: DataLoader | None = None
        self.process: DistillationProcess | None = None
        self.step: SearchStep | None = None
        self.held_out: HeldOutStream | None = None
        self._pending_state: dict[str, Any] | None = None
        self._record: SearchRecord | None = None  # this step's row, until its update is known
        self._collapse_warned = False

    def __getattr__(self, name: str) -> Any:
        # the constructor's arguments read back, e.g. ``callback.alpha_lr``
        for part in ("settings", "writer", "logger", "guard"):
            holder = self.__dict__.get(part)
            if holder is not None and name in vars(holder):
                return vars(holder)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        if self.writer.save_path not in (None, AUTO_PATH):
            self.writer.save_path = with_log_dir(self.writer.save_path, trainer)
        check_setup(trainer, pl_module, self.settings)
        module: Any = pl_module
        pending, self._pending_state = self._pending_state, None
        warm = None
        if self.init_process is not None and pending is None:
            warm = warm_start(module, self.init_process)
        reduce_mean = partial(trainer.strategy.reduce, reduce_op="mean")
        self.step = SearchStep(
            module,
            trainer.optimizers[0],
            self.settings,
            reduce_mean if trainer.world_size > 1 else None,
            self._autocast(trainer),
        )
        loader = self.search_val_loader or held_out_loader(trainer, self.held_out_source)
        self.held_out = HeldOutStream(loader, self.seed, trainer.world_size, trainer.global_rank)
        self.guard = UpdateGuard(self.guard.max_non_finite_steps)
        warn_extreme_settings(module, self.settings)
        if pending is None:  # a new fit (a callback reused for another fit included)
            process = module.new_process(search_provenance(trainer, module, self.settings))
            process.run_id = trainer.strategy.broadcast(new_run_id())
            if warm is not None:
                process.provenance["init_process"] = warm
        else:
            assert self.step is not None and self.held_out is not None
            fresh = search_provenance(trainer, module, self.settings)
            process = restore_search(pending, module, self.step, self.held_out, fresh)
            if process.run_id is None:  # a checkpoint of 0.1
                process.run_id = trainer.strategy.broadcast(new_run_id())
        self.writer.prepare(trainer, process.run_id)
        self.process = process
        if self.diagnostics_every_n_steps:
            self.diagnostics = SearchDiagnostics(self.diagnostics_every_n_steps, self.step.options)
            self.diagnostics.load_record(process.provenance.get("diagnostics", {}))
            second_seed = self.seed + 1_000_003  # an independent held-out order
            self._second_held_out = HeldOutStream(
                loader, second_seed, trainer.world_size, trainer.global_rank
            )
        log_search_hyperparameters(
            trainer, self.settings, {"warmup_steps": self.warmup_steps, "seed": self.seed}
        )

    def _autocast(self, trainer: pl.Trainer) -> Any:
        if (
            str(trainer.precision) == "bf16-mixed"
            and self.settings.hypergradient == "finite_difference"
        ):
            return trainer.precision_plugin.forward_context
        return nullcontext  # fp32 search passes (16-mixed: no GradScaler, fp32 throughout)

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
        if step >= self.warmup_steps:
            held_out = self._draw(trainer, self.held_out)
        old_logits = pl_module.alpha_logits.detach().clone()
        record = self.step(batch, held_out, step, batch_idx)
        if self.diagnostics is not None and held_out is not None:
            self._diagnose(trainer, pl_module, batch, held_out, record, old_logits)
        self.logger.log(pl_module, record)
        self._record = record

    def _draw(self, trainer: pl.Trainer, stream: HeldOutStream) -> Any:
        """The next held-out batch, ``val_batches_per_step`` batches concatenated."""
        batches = [stream.next_batch() for _ in range(self.val_batches_per_step)]
        return trainer.strategy.batch_to_device(concat_batches(batches))

    def _diagnose(
        self, trainer: pl.Trainer, module: Any, batch: Any, held_out: Any, record: Any, old: Tensor
    ) -> None:
        assert self.diagnostics is not None and self._second_held_out is not None
        stream = self._second_held_out
        row = self.diagnostics.diagnose_step(
            module, self.step.optimizer, (batch, held_out), lambda: self._draw(trainer, stream),
            record, old,
        )  # fmt: skip
        if row is not None and self.process is not None:
            self.process.provenance["diagnostics"] = self.diagnostics.to_record()

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
        update_skipped = self.guard.check(optimizer)
        if update_skipped:
            rank_zero_warn(
                f"DistPro search: non-finite training loss or gradient at step "
                f"{trainer.global_step}; the optimizer update was skipped (the student keeps "
                f"its weights and BatchNorm statistics; {self.guard.skipped} so far). Check the "
                "data for NaN/inf, or lower the student lr."
            )
        self._commit(trainer, update_skipped)

    def _commit(self, trainer: pl.Trainer, update_skipped: bool = False) -> None:
        record, self._record = self._record, None
        if record is None or self.process is None:
            return
        non_finite = record.skipped or update_skipped
        self.process.append(record.logits, skipped=non_finite)
        self.guard.tally(non_finite)
        self.writer.step_written(trainer, self.process)
        if self.guard.exhausted:
            n = self.guard.consecutive
            raise NonFiniteStepError(
                f"DistPro search stopped: {n} consecutive steps (up to step {record.step}) had "
                "a non-finite training loss, gradient or hypergradient; their updates were "
                f"skipped. The process so far is saved at {self._where()}. Check the data for "
                "NaN/inf and lower the student lr (or epsilon), or raise max_non_finite_steps."
            )

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
        if not pl_module.automatic_optimization and trainer.global_step != ctx.step + 1:
            raise RuntimeError(
                f"With manual optimization the search needs exactly one optimizer step per "
                f"training batch (it searched alpha for step {ctx.step}, and the batch ended at "
                f"global step {trainer.global_step}): call opt.step() once in training_step, "
                "after self.manual_backward(loss)."
            )
        if ctx.reused is not None:
            raise RuntimeError(
                f"{type(pl_module).__name__}.training_step did not apply the reused training "
                "gradient: call self.take_reused_gradient() in it (see DistProModule), or set "
                "reuse_training_gradient=False."
            )

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
        self._commit(trainer)
        if self.writer.save_every_epoch:
            self.writer.save(trainer, self.process)
        if self.writer.plot:
            self.logger.epoch_end(trainer, self.process)
            self._figures_at = trainer.global_step
        if not self._collapse_warned and weights_collapsed(pl_module):  # type: ignore[arg-type]
            self._collapse_warned = True
            rank_zero_warn(
                "DistPro search: every pathway weight has fallen below 1/1000 of its initial "
                "value, so distillation is switched off. If that is not the finding you expect, "
                f"lower alpha_lr (now {self.settings.alpha_lr:g})."
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.enabled and self.process is not None:
            self._record = None  # its optimizer update did not happen
            save_on_exception(trainer, self.writer, self.process, exception)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
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
