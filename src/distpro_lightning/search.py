"""``ProcessSearchCallback``: the second-order alpha search at every optimizer step."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from .contract import SearchableModule, missing_members
from .diagnostics import SearchDiagnostics
from .heldout import HeldOutStream, concat_batches
from .hypergradient import HypergradientOptions, SearchBatches, SGDHyper, compute_hypergradient
from .plots import log_process_figures
from .process import DistillationProcess
from .search_logging import SearchLogger, log_process_artifact, log_search_hyperparameters
from .search_output import ProcessWriter, search_provenance
from .search_step import SearchSettings, SearchStep
from .sweeps import with_log_dir
from .transfer import warm_start

_HALF_PRECISIONS = ("16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")


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

    Python:

    ```python
    from distpro_lightning import ProcessSearchCallback
    search = ProcessSearchCallback(hypergradient="finite_difference", alpha_lr=0.05,
                                   save_path="runs/search/process.json")
    trainer = Trainer(max_epochs=40, callbacks=[search])
    trainer.fit(module, datamodule=FashionMNISTDataModule(mode="search"))
    ```

    YAML (``distpro fit``, flat sweep keys such as ``--search.alpha_lr 0.1``):

    ```yaml
    search:
      hypergradient: finite_difference
      alpha_lr: 0.05
      save_path: runs/search/process.json
    ```

    Args:
        hypergradient: ``"finite_difference"`` (two forward passes at ``theta +- eps v``)
            or ``"exact"`` (one forward-mode JVP, ``torch.func.jvp``).
        alpha_lr: learning rate of the logits' optimizer.
        alpha_optimizer: ``"adam"`` (paper; betas ``alpha_betas``) or ``"sgd"``.
        alpha_betas: Adam betas (the official release uses ``(0.5, 0.999)``).
        alpha_weight_decay: weight decay on the logits.
        epsilon: finite-difference radius; ``eps = epsilon / ||v||``.
        save_path: where the process is written (JSON, atomically, rank 0); ``None``: not
            written. ``{log_dir}`` in it is replaced by the run's log directory
            (`run_log_dir`), e.g. ``{log_dir}/process.json``
            gives every run (every sweep trial) its own file. A PNG plot is written beside it at the end of fit.
        save_every_n_steps: also write it every n steps (0: only at the end).
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
            (:mod:`~distpro_lightning.diagnostics`: agreement of the hypergradient on a
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
        enabled: ``False`` makes the callback inert (the ``distpro`` CLI's default for its
            ``search:`` section, so ``search.enabled: true`` switches the search on).
    """

    def __init__(
        self,
        hypergradient: Literal["finite_difference", "exact"] = "finite_difference",
        alpha_lr: float = 0.05,
        alpha_optimizer: Literal["adam", "sgd"] = "adam",
        alpha_betas: tuple[float, float] = (0.5, 0.999),
        alpha_weight_decay: float = 0.0,
        epsilon: float = 0.01,
        save_path: str | None = "process.json",
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
    ) -> None:
        self.settings = SearchSettings(
            hypergradient, epsilon, alpha_lr, alpha_optimizer, tuple(alpha_betas),
            alpha_weight_decay, average_virtual_gradient, average_val_gradient,
            reuse_training_gradient,
        )  # fmt: skip
        self.writer = ProcessWriter(save_path, save_every_n_steps, plot)
        if log_every_n_steps is not None:
            rank_zero_warn(
                f"ProcessSearchCallback(log_every_n_steps={log_every_n_steps}) is deprecated and "
                "ignored: the search metrics follow Trainer(log_every_n_steps=...). Remove the "
                "argument (search.log_every_n_steps in configs); use log_pathways=False to drop "
                "the per-pathway series.",
                category=FutureWarning,
            )
        self.logger = SearchLogger(log_pathways)
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
        self.seed = seed
        self.enabled = enabled
        self.search_val_loader: DataLoader | None = None
        self.held_out_source = held_out
        self.process: DistillationProcess | None = None
        self.step: SearchStep | None = None
        self.held_out: HeldOutStream | None = None
        self._pending_state: dict[str, Any] | None = None
        self._figures_at: int | None = None

    def __getattr__(self, name: str) -> Any:
        # the constructor's arguments read back, e.g. ``callback.alpha_lr``
        for part in ("settings", "writer", "logger"):
            holder = self.__dict__.get(part)
            if holder is not None and name in vars(holder):
                return vars(holder)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def skipped_updates(self) -> int:
        """Alpha updates skipped for a non-finite hypergradient in this fit."""
        return self.step.skipped_updates if self.step is not None else 0

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
        self.writer.save_path = with_log_dir(self.writer.save_path, trainer)
        self._check_setup(trainer, pl_module)
        module: Any = pl_module
        pending, self._pending_state = self._pending_state, None
        warm = None
        if self.init_process is not None and pending is None and self.process is None:
            warm = warm_start(module, self.init_process)
        reduce_mean = partial(trainer.strategy.reduce, reduce_op="mean")
        self.step = SearchStep(
            module,
            trainer.optimizers[0],
            self.settings,
            reduce_mean if trainer.world_size > 1 else None,
            self._autocast(trainer),
        )
        loader = self.search_val_loader or _held_out_loader(trainer, self.held_out_source)
        self.held_out = HeldOutStream(loader, self.seed, trainer.world_size, trainer.global_rank)
        if self.process is None:
            self.process = module.new_process(search_provenance(trainer, module, self.settings))
            if warm is not None:
                self.process.provenance["init_process"] = warm
        if self.diagnostics_every_n_steps:
            self.diagnostics = SearchDiagnostics(self.diagnostics_every_n_steps, self.step.options)
            second_seed = self.seed + 1_000_003  # an independent held-out order
            self._second_held_out = HeldOutStream(
                loader, second_seed, trainer.world_size, trainer.global_rank
            )
        log_search_hyperparameters(
            trainer, self.settings, {"warmup_steps": self.warmup_steps, "seed": self.seed}
        )
        if pending is not None:
            self._restore(pending, module)

    def _check_setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, SearchableModule):
            raise TypeError(
                "ProcessSearchCallback needs a module with DistProMixin (e.g. DistProModule); "
                f"{type(pl_module).__name__} lacks {', '.join(missing_members(pl_module))}."
            )
        if len(trainer.optimizers) != 1:
            raise RuntimeError(
                f"ProcessSearchCallback supports exactly one optimizer (theta of student and "
                f"heads); configure_optimizers returned {len(trainer.optimizers)}."
            )
        precision = str(trainer.precision)
        if precision in _HALF_PRECISIONS:
            raise RuntimeError(
                f"precision={precision!r} is not supported by the search (second-order terms "
                "in half precision are unreliable). Use '32-true', 'bf16-mixed' or '16-mixed'."
            )
        if self.settings.reuse_training_gradient and not pl_module.applies_reused_gradient:
            raise RuntimeError(
                "reuse_training_gradient=True needs a module whose training_step applies the "
                "reused gradient (DistProModule, or set applies_reused_gradient = True and "
                "return self.take_reused_gradient().surrogate_loss()); otherwise leave it False."
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
        """One search step on ``batch``: update and record ``alpha_logits``."""
        assert self.step is not None and self.held_out is not None and self.process is not None
        if self.process.steps_per_epoch is None:
            self.process.steps_per_epoch = _steps_per_epoch(trainer)
        step = trainer.global_step
        held_out = None
        if step >= self.warmup_steps:
            held_out = self._draw(trainer, self.held_out)
        old_logits = pl_module.alpha_logits.detach().clone()
        record = self.step(batch, held_out, step, batch_idx)
        if self.diagnostics is not None and held_out is not None:
            self._diagnose(trainer, pl_module, batch, held_out, record, old_logits)
        self.logger.log(pl_module, record)
        self.process.append(record.logits)
        self.writer.step_written(trainer, self.process)

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

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled and self.process is not None and self.writer.plot:
            self.logger.epoch_end(trainer, self.process)
            self._figures_at = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or self.process is None:
            return
        val = trainer.callback_metrics.get("search/val_loss")
        if val is not None:
            self.process.provenance["search_val_loss"] = float(val)
        self.writer.finish(trainer, self.process)
        if self.writer.plot and self._figures_at != trainer.global_step:
            log_process_figures(trainer, self.process, "search/process")
        path = self.writer.save_path
        if path is not None and len(self.process) and trainer.is_global_zero:
            log_process_artifact(trainer, path, self.process)
            rank_zero_info(f"DistPro: process saved to {path} ({len(self.process)} steps)")
        if self.skipped_updates:
            rank_zero_warn(f"DistPro search skipped {self.skipped_updates} non-finite updates.")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.process is None or self.step is None or self.held_out is None:
            return {}
        return {
            **self.step.state_dict(),
            **self.held_out.state_dict(),
            "logits": self.process.logits,
            "pathway_names": list(self.process.pathway_names),
            "provenance_created": self.process.provenance.get("created"),
            "diagnostics": self.process.provenance.get("diagnostics"),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict) if state_dict else None

    def _restore(self, state: Mapping[str, Any], module: SearchableModule) -> None:
        assert self.process is not None and self.step is not None and self.held_out is not None
        if list(state["pathway_names"]) != list(module.pathway_names):
            raise RuntimeError(
                "The checkpoint's search state belongs to different pathways: "
                f"{state['pathway_names']} vs {module.pathway_names}."
            )
        self.process.truncate(0)
        for row in state["logits"]:
            self.process.append(row)
        if state.get("provenance_created"):
            self.process.provenance["created"] = state["provenance_created"]
        if state.get("diagnostics"):
            self.process.provenance["diagnostics"] = state["diagnostics"]
        self.step.load_state_dict(state)
        self.held_out.load_state_dict(state)
        if self.diagnostics is not None and "diagnostics" in self.process.provenance:
            self.diagnostics.load_record(self.process.provenance["diagnostics"])


def _held_out_loader(trainer: pl.Trainer, source: str | pl.LightningDataModule | None) -> Any:
    if isinstance(source, pl.LightningDataModule):
        source.prepare_data()
        source.setup("fit")
        return source.train_dataloader()
    dm = trainer.datamodule
    method = source or "search_val_dataloader"
    if dm is None or not callable(getattr(dm, method, None)):
        raise RuntimeError(
            f"ProcessSearchCallback needs held-out batches: the data module has no {method}(). "
            "Use a DistPro data module in mode='search', name your data module's method "
            "(held_out='val_dataloader'), give a data module of held-out data (held_out: "
            "{class_path: ...}), or set callback.search_val_loader = DataLoader(...)."
        )
    return getattr(dm, method)()


def _steps_per_epoch(trainer: pl.Trainer) -> int | None:
    batches = trainer.num_training_batches
    if batches and batches != float("inf"):
        return max(1, int(batches) // trainer.accumulate_grad_batches)
    return None
