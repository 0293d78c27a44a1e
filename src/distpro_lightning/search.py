"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from .contract import SearchableModule
from .heldout import HeldOutStream
from .hypergradient import HypergradientOptions, SearchBatches, SGDHyper, compute_hypergradient
from .outputs import new_run_id
from .process import DistillationProcess
from .search_checks import check_setup, warn_extreme_settings, weights_collapsed
from .search_guard import NonFiniteStepError, UpdateGuard
from .search_output import AUTO_PATH, ProcessWriter, SearchLogger, search_provenance
from .search_state import restore_search, search_state
from .search_step import SearchRecord, SearchSettings, SearchStep


class ProcessSearchCallback(Callback):
    """Learn the pathway logits ``a~_t`` by bi-level meta-optimization and record them.

    At every optimizer step, before the real update, it runs a
    :class:`~distpro_lightning.search_step.SearchStep` on the training batch and the next
    held-out batch (:class:`~distpro_lightning.heldout.HeldOutStream`): the hypergradient of
    the held-out loss after a virtual step of the student (paper eqs. 4-5), averaged over
    DDP ranks, updates ``module.alpha_logits`` with its own optimizer, and the new logits
    are appended to :attr:`process`. The real update then uses ``w(a~_{t+1})`` and reuses
    the teacher features computed for the search (the module's
    :class:`~distpro_lightning.contract.StepContext`). This class keeps the hooks, the
    checks, the logging (:class:`~distpro_lightning.search_output.SearchLogger`), the files
    (:class:`~distpro_lightning.search_output.ProcessWriter`) and the checkpoint state.

    Python::

        from distpro_lightning import ProcessSearchCallback
        search = ProcessSearchCallback(hypergradient="finite_difference", alpha_lr=0.05,
                                       save_path="runs/search/process.json")
        trainer = Trainer(max_epochs=40, callbacks=[search])
        trainer.fit(module, datamodule=FashionMNISTDataModule(mode="search"))

    YAML (``distpro fit``, flat sweep keys such as ``--search.alpha_lr 0.1``)::

        search:
          hypergradient: finite_difference
          alpha_lr: 0.05
          save_path: runs/search/process.json

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
            chooses its ``dirpath`` (:func:`~distpro_lightning.outputs.default_process_path`);
            ``None``: not written. Checked at fit start: a path that cannot be written, or
            that holds another run's process, is refused before any compute. The PNG plots
            (:func:`~distpro_lightning.plots.plot_paths`) are written beside it at the end.
        save_every_n_steps: also write it every n steps (0: not by step count).
        save_every_epoch: also write it at the end of every training epoch. With it (and on
            any exception, Ctrl-C included, where it is always written) a crash or kill
            loses at most one epoch, or ``save_every_n_steps`` steps if fewer.
        overwrite: replace an existing process file of another run at ``save_path``
            (otherwise refused; the file of the run being resumed is always replaced).
        max_non_finite_steps: stop with an error after this many consecutive steps with a
            non-finite training loss/gradient or hypergradient (0: never). Each such step's
            real update is skipped and its row is marked in ``skipped_steps``.
        log_every_n_steps: how often weights, hypergradient norm and held-out loss are logged.
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
            :class:`DistProModule`).
        seed: seed of the held-out batch order (cycle ``c`` uses ``seed + c``).
        plot: write and log the process plots at the end of fit.
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
        log_every_n_steps: int = 50,
        warmup_steps: int = 0,
        average_virtual_gradient: bool = True,
        average_val_gradient: bool = True,
        reuse_training_gradient: bool = False,
        seed: int = 0,
        plot: bool = True,
        enabled: bool = True,
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
        self.logger = SearchLogger(log_every_n_steps)
        self.guard = UpdateGuard(max_non_finite_steps)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.warmup_steps = warmup_steps
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
        x, y = module.split_batch(train_batch)
        xv, yv = module.split_batch(val_batch)
        batches = SearchBatches(x, y, module.teacher_outputs(x), xv, yv)
        virtual = {k: SGDHyper(lr=lr) for k in module.search_parameters().student}
        options = HypergradientOptions(self.settings.hypergradient, self.settings.epsilon)
        return compute_hypergradient(module, batches, virtual, options).hypergradient

    # ------------------------------------------------------------------ setup
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        self.process, self._record, self._collapse_warned = None, None, False
        check_setup(trainer, pl_module, self.settings)
        module: Any = pl_module
        reduce_mean = partial(trainer.strategy.reduce, reduce_op="mean")
        self.step = SearchStep(
            module,
            trainer.optimizers[0],
            self.settings,
            reduce_mean if trainer.world_size > 1 else None,
            self._autocast(trainer),
        )
        loader = self.search_val_loader or _held_out_loader(trainer)
        self.held_out = HeldOutStream(loader, self.seed, trainer.world_size, trainer.global_rank)
        self.guard = UpdateGuard(self.guard.max_non_finite_steps)
        warn_extreme_settings(module, self.settings)
        pending, self._pending_state = self._pending_state, None
        if pending is None:  # a new fit (a callback reused for another fit included)
            process = module.new_process(search_provenance(trainer, module, self.settings))
            process.run_id = trainer.strategy.broadcast(new_run_id())
        else:
            assert self.step is not None and self.held_out is not None
            fresh = search_provenance(trainer, module, self.settings)
            process = restore_search(pending, module, self.step, self.held_out, fresh)
            if process.run_id is None:  # a checkpoint of 0.1
                process.run_id = trainer.strategy.broadcast(new_run_id())
        self.writer.prepare(trainer, process.run_id)
        self.process = process

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
            self.process.steps_per_epoch = _steps_per_epoch(trainer)
        self.guard.snapshot((pl_module.student, pl_module.distill_heads))
        step = trainer.global_step
        held_out = None
        if step >= self.warmup_steps:
            held_out = trainer.strategy.batch_to_device(self.held_out.next_batch())
        record = self.step(batch, held_out, step, batch_idx)
        self.logger.log(pl_module, record)
        self._record = record

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
        if not self.enabled or self.process is None:
            return
        self._record = None  # its optimizer update did not happen
        try:
            self.writer.save(trainer, self.process)
        except Exception as exc:  # noqa: BLE001 - never hide the exception being handled
            rank_zero_warn(f"DistPro search: could not save the process on {exception!r}: {exc}")
            return
        if self.writer.path is not None and len(self.process):
            rank_zero_info(
                f"DistPro search interrupted: {len(self.process)} steps saved to {self._where()}."
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
        self._commit(trainer)
        self.writer.finish(trainer, self.process)
        if self.skipped_updates or self.guard.skipped:
            rank_zero_warn(
                f"DistPro search skipped {self.skipped_updates} non-finite alpha updates and "
                f"{self.guard.skipped} non-finite optimizer updates (rows {self.process.skipped_steps[:10]}"
                f"{' ...' if len(self.process.skipped_steps) > 10 else ''} in skipped_steps)."
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.process is None or self.step is None or self.held_out is None:
            return {}
        return search_state(self.process, self.step, self.held_out)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict) if state_dict else None


def _held_out_loader(trainer: pl.Trainer) -> DataLoader:
    dm = trainer.datamodule
    if dm is None or not hasattr(dm, "search_val_dataloader"):
        raise RuntimeError(
            "ProcessSearchCallback needs held-out batches: use a data module with "
            "search_val_dataloader() in mode='search', or set "
            "callback.search_val_loader = DataLoader(...)."
        )
    return dm.search_val_dataloader()


def _steps_per_epoch(trainer: pl.Trainer) -> int | None:
    batches = trainer.num_training_batches
    if batches and batches != float("inf"):
        return max(1, int(batches) // trainer.accumulate_grad_batches)
    return None
