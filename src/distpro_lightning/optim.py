"""Optimizer and learning-rate schedule construction, and the evaluation steps shared by the
student LightningModules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["step", "cosine", "none"]


def build_optimizer(
    params: Iterable[nn.Parameter],
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """SGD (with momentum, weight decay, optional Nesterov), Adam or AdamW."""
    params = list(params)
    if optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {optimizer!r}. Choose one of: sgd, adam, adamw.")


def build_scheduler(
    opt: torch.optim.Optimizer,
    scheduler: str = "step",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """A per-epoch multi-step or cosine schedule in Lightning's ``lr_scheduler`` dict form."""
    if scheduler == "none":
        return None
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    elif scheduler == "cosine":
        if not max_epochs or max_epochs < 1:
            raise ValueError("scheduler='cosine' needs the Trainer's max_epochs to be set.")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    else:
        raise ValueError(f"Unknown scheduler {scheduler!r}. Choose one of: step, cosine, none.")
    return {"scheduler": sched, "interval": "epoch"}


def configure(module: Any, params: Iterable[nn.Parameter]) -> Any:
    """``configure_optimizers`` body for a LightningModule whose hyper-parameters hold
    ``optimizer, lr, momentum, weight_decay, nesterov, scheduler, milestones, gamma``."""
    h = module.hparams
    opt = build_optimizer(params, h.optimizer, h.lr, h.momentum, h.weight_decay, h.nesterov)
    max_epochs = module.trainer.max_epochs if module._trainer is not None else None
    sched = build_scheduler(opt, h.scheduler, h.milestones, h.gamma, max_epochs)
    if sched is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": sched}


class StudentEvalMixin:
    """Validation/test steps of a distilled student: top-1 (torchmetrics) and the task loss.

    Expects ``self.student``, ``self.val_top1`` and ``self.test_top1``; uses
    ``self.split_batch`` / ``self.task_loss`` when the module has them.
    """

    def _eval_step(self, batch: Any, metric: Any, stage: str) -> None:
        split = getattr(self, "split_batch", None)
        x, y = split(batch) if split else (batch[0], batch[1])
        logits = self.student(x)
        metric(logits, y)
        loss_fn = getattr(self, "task_loss", None)
        loss = loss_fn(logits, y) if loss_fn else torch.nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.log(f"{stage}/top1", metric, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_top1, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_top1, "test")
