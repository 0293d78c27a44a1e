"""Optimizer and learning-rate schedule settings, declared once, and ``StudentModule``: the
base of the library's LightningModules (optimizer settings, hyper-parameters, top-1
evaluation of the student)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities.parsing import collect_init_args
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from distpro_lightning.grouping import (
    check_field_types,
    check_ranges,
    coerce_group,
    flat_to_groups,
    given_fields,
    non_negative,
    plain,
    positive,
    say_unused,
)
from distpro_lightning.modules.contract import split_inputs_targets
from distpro_lightning.modules.divergence import DivergenceWarning, DivergenceWatch


@dataclass(frozen=True)
class OptimizerConfig:
    """The student optimizer and its per-epoch schedule (YAML: ``optimizer: {name: sgd,
    lr: 0.05, scheduler: cosine}`` under the module's ``init_args``).

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay (decoupled for ``adamw``).
        nesterov: Nesterov momentum (SGD).
        scheduler: ``step`` (multi-step, per epoch), ``cosine`` (per epoch over the
            Trainer's ``max_epochs``; with ``max_steps`` alone, per step over its
            ``estimated_stepping_batches``) or ``none``.
        milestones: epochs at which ``step`` multiplies the lr by ``gamma``.
        gamma: the ``step`` schedule's factor.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    scheduler: Literal["step", "cosine", "none"] = "step"
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.name not in ("sgd", "adam", "adamw"):
            raise ValueError(
                f"Unknown optimizer {self.name!r} (optimizer.name). Choose one of: sgd, adam, "
                "adamw."
            )
        if self.scheduler not in ("step", "cosine", "none"):
            raise ValueError(
                f"Unknown scheduler {self.scheduler!r} (optimizer.scheduler). Choose one of: "
                "step, cosine, none."
            )
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_ranges(
            "optimizer",
            self,
            {
                "lr": (positive, "a finite number > 0"),
                "momentum": (lambda m: 0 <= m < 1, "in [0, 1)"),
                "weight_decay": (non_negative, "a finite number >= 0"),
                "gamma": (positive, "a finite number > 0"),
                "milestones": (
                    lambda ms: all(isinstance(m, int) and m > 0 for m in ms),
                    "positive epoch numbers",
                ),
            },
        )
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError(
                "optimizer.nesterov=True needs optimizer.name='sgd' with momentum > 0 (got "
                f"name={self.name!r}, momentum={self.momentum})."
            )
        step_only = (
            None
            if self.scheduler == "step"
            else f"scheduler={self.scheduler!r} (only 'step' uses it)"
        )
        say_unused(
            "optimizer",
            self,
            {
                "momentum": None
                if self.name == "sgd"
                else f"name={self.name!r} (only 'sgd' uses it)",
                "milestones": step_only,
                "gamma": step_only
                or (None if self.milestones else "milestones=() (no epoch to apply it at)"),
            },
        )

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD (with momentum, weight decay, optional Nesterov), Adam or AdamW."""
        params = list(params)
        if self.name == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                nesterov=self.nesterov,
            )
        opt_class = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return opt_class(params, lr=self.lr, weight_decay=self.weight_decay)

    def build_scheduler(
        self,
        opt: torch.optim.Optimizer,
        max_epochs: int | None = None,
        total_steps: float | None = None,
    ) -> dict[str, Any] | None:
        """The schedule in Lightning's ``lr_scheduler`` dict form (``None``: none): per
        epoch; ``cosine`` without ``max_epochs`` (``Trainer(max_steps=...)`` alone) anneals
        per optimizer step over ``total_steps`` (the Trainer's
        ``estimated_stepping_batches``)."""
        if self.scheduler == "none":
            return None
        if self.scheduler == "step":
            sched: Any = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones=list(self.milestones), gamma=self.gamma
            )
            return {"scheduler": sched, "interval": "epoch"}
        if max_epochs is not None and max_epochs >= 1:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
            return {"scheduler": sched, "interval": "epoch"}
        if total_steps is None or not 1 <= total_steps < float("inf"):
            raise ValueError(
                "scheduler='cosine' needs the run's length: set the Trainer's max_epochs (a "
                "per-epoch cosine) or max_steps (a per-step cosine over "
                "trainer.estimated_stepping_batches)."
            )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(total_steps))
        return {"scheduler": sched, "interval": "step"}

    def configure(
        self,
        params: Iterable[nn.Parameter],
        max_epochs: int | None = None,
        total_steps: float | None = None,
    ) -> Any:
        """A ``configure_optimizers`` return value (``total_steps``: see `build_scheduler`)."""
        opt = self.build_optimizer(params)
        sched = self.build_scheduler(opt, max_epochs, total_steps)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


#: The flat optimizer keywords of earlier versions: ``name -> ("optimizer", field)``.
OPTIMIZER_FLAT_KEYS: dict[str, tuple[str, str]] = {
    "optimizer": ("optimizer", "name"),
    **{
        name: ("optimizer", name)
        for name in (
            "lr",
            "momentum",
            "weight_decay",
            "nesterov",
            "scheduler",
            "milestones",
            "gamma",
        )
    },
}


class StudentModule(pl.LightningModule):
    """Base of the library's LightningModules: a student trained with an
    `OptimizerConfig`, evaluated by top-1 (torchmetrics) and the task loss.

    Every ``__init__`` argument of the subclass and of this class is saved as a
    hyper-parameter (grouped settings as plain dicts, so checkpoints load with
    ``weights_only=True``), except arguments given as ``nn.Module`` objects. Subclasses set
    ``self.student``, implement `trainable_parameters` and pass ``optimizer`` (and any
    deprecated flat keywords, ``**flat``) through.

    Args:
        num_classes: number of classes (the top-1 metrics).
        optimizer: the student optimizer and schedule, an `OptimizerConfig` or a dict of
            its fields (YAML: ``optimizer: {name: sgd, lr: 0.05}``).
        **flat: the flat optimizer keywords of version 0.1 (``lr=0.1``, ``optimizer="adam"``
            ...), applied to ``optimizer`` with a ``FutureWarning``; other names are refused.
    """

    student: nn.Module
    #: what to do about a diverging run, the end of the `DivergenceWarning` of the
    #: subclasses that call `watch_task_loss`
    divergence_remedy = "Lower the learning rate (optimizer.lr)."

    def __init__(
        self,
        num_classes: int = 10,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008 - a frozen dataclass
        **flat: Any,
    ) -> None:
        super().__init__()
        given = {"optimizer": (OptimizerConfig, optimizer)}
        optimizer = self.regroup(given, flat, OPTIMIZER_FLAT_KEYS)["optimizer"]
        self.optimizer_config: OptimizerConfig = optimizer
        self._save_init_hyperparameters(inspect.currentframe(), set(flat))
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.divergence_watch = DivergenceWatch(num_classes)

    def regroup(
        self,
        given: Mapping[str, tuple[type, Any]],
        flat: Mapping[str, Any],
        keys: Mapping[str, tuple[str, str]],
    ) -> dict[str, Any]:
        """The grouped settings ``given`` (``name -> (class, value)``; the value an object,
        a dict of its fields or ``None`` for the defaults) with the deprecated flat keywords
        ``flat`` applied through ``keys`` and one ``FutureWarning``; an unknown keyword is
        refused with the closest name. A string ``optimizer`` is version 0.1's optimizer
        name."""
        owner = type(self).__name__
        flat = dict(flat)
        groups, defaults, explicit = {}, {}, {}
        parameters = inspect.signature(type(self).__init__).parameters
        for name, (kind, value) in given.items():
            if name == "optimizer" and isinstance(value, str):
                flat["optimizer"], value = value, None
            groups[name] = coerce_group(owner, name, kind, kind() if value is None else value)
            default = parameters[name].default if name in parameters else None
            defaults[name] = default if isinstance(default, kind) else kind()
            explicit[name] = given_fields(value, default)
        valid = [p for p in parameters if p != "self"]
        return flat_to_groups(owner, flat, keys, groups, valid, defaults, explicit)

    def _save_init_hyperparameters(self, frame: Any, deprecated: set[str]) -> None:
        """Save the init arguments: the LightningCLI's config as given (so
        `load_from_checkpoint` rebuilds classes named by ``class_path``), else the
        arguments with grouped settings as dicts and without modules or flat keywords."""
        given = _given_hyperparameters.get()
        values: dict[str, Any] = {}
        for args in collect_init_args(frame, [], classes=(HyperparametersMixin,)):
            values.update(args)
        if given is not None:
            modules = [
                k
                for k, v in values.items()
                if isinstance(v, nn.Module) and not isinstance(given.get(k), Mapping)
            ]
            self.save_hyperparameters(ignore=modules, frame=frame)
            return
        values["optimizer"] = self.optimizer_config
        kept = {
            k: plain(v)
            for k, v in values.items()
            if k not in deprecated and not isinstance(v, nn.Module)
        }
        self.save_hyperparameters(kept, frame=frame)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer trains."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """The optimizer group's optimizer and schedule; a cosine schedule runs per epoch
        over ``max_epochs``, or, when only ``max_steps`` is set, per step over the Trainer's
        ``estimated_stepping_batches``."""
        trainer = self._trainer
        max_epochs = trainer.max_epochs if trainer is not None else None
        cosine = self.optimizer_config.scheduler == "cosine"
        by_steps = trainer is not None and cosine and (max_epochs is None or max_epochs < 1)
        total = trainer.estimated_stepping_batches if by_steps else None
        return self.optimizer_config.configure(self.trainable_parameters(), max_epochs, total)

    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` of a batch ``(x, y, ...)``; override for other layouts."""
        return split_inputs_targets(batch, type(self).__name__)

    def task_loss(self, student_outputs: Tensor, targets: Tensor) -> Tensor:
        """The task loss of the student (cross-entropy)."""
        return torch.nn.functional.cross_entropy(student_outputs, targets)

    def log_train_loss(self, loss: Tensor) -> None:
        """Log the training loss: ``train/loss`` per step (at the Trainer's
        ``log_every_n_steps``, and in the progress bar) and its epoch mean
        ``train/loss_epoch`` at every epoch end, so a run shorter than ``log_every_n_steps``
        (a short retrain, without validation) still writes its metrics (``metrics.csv``)."""
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=True)

    def watch_task_loss(self, task_loss: Tensor) -> None:
        """Watch a distilled run's task loss for a divergence (`DivergenceWatch`): kept on
        the device every step, read at the Trainer's ``log_every_n_steps`` (``0``: no step
        logging, epoch ends only) and at every epoch end, one `DivergenceWarning` per fit."""
        self.divergence_watch.update(task_loss)
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 0
        if every > 0 and (trainer.global_step + 1) % every == 0:
            self.warn_if_diverging()

    def warn_if_diverging(self) -> None:
        """Issue the `DivergenceWarning` if the watched task loss marks a divergence."""
        step = self._trainer.global_step if self._trainer is not None else 0
        message = self.divergence_watch.message(step, self.divergence_remedy)
        if message is not None:
            rank_zero_warn(f"{type(self).__name__}: {message}", category=DivergenceWarning)

    def on_train_start(self) -> None:
        self.divergence_watch.reset()
        super().on_train_start()

    def on_train_epoch_end(self) -> None:
        self.warn_if_diverging()
        super().on_train_epoch_end()

    def _eval_step(self, batch: Any, metric: Any, stage: str) -> Tensor:
        x, y = self.split_batch(batch)
        logits = self.student(x)
        metric(logits, y)
        self.log(f"{stage}/loss", self.task_loss(logits, y), sync_dist=True)
        self.log(f"{stage}/top1", metric, prog_bar=True)
        return logits

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The student's logits for a batch: ``(inputs, targets, ...)`` as in training,
        or the inputs alone (a tensor)."""
        x = batch if isinstance(batch, Tensor) else self.split_batch(batch)[0]
        return self.student(x)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_top1, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_top1, "test")
