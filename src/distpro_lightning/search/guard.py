"""Non-finite steps: the real optimizer update of a step whose gradients hold NaN or inf is
skipped (the student keeps its parameters, optimizer state and BatchNorm statistics), and a
run of such steps stops the search with an error."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from distpro_lightning.errors import DistProError
from distpro_lightning.modules.step_context import BufferSnapshot


class NonFiniteStepError(DistProError, RuntimeError):
    """Too many consecutive steps with a non-finite training loss or gradient."""


class UpdateGuard:
    """Keeps one non-finite step from ruining the student.

    It restores the buffers from the step's one `BufferSnapshot` (taken by `SearchStep`
    before the step's forward passes, shared with the shared forward: `watch`); `check` (after backward, before the optimizer step: Lightning's
    ``on_before_optimizer_step``) looks at the gradients the optimizer is about to apply.
    When any is NaN or inf it sets them all to ``None``, so ``optimizer.step()`` leaves every
    parameter and its optimizer state (momentum, Adam moments, weight decay) as they were,
    and it puts the buffers (BatchNorm running statistics, which the forward pass of a NaN
    batch has already spoilt) back. Under DDP the gradients are checked after their
    all-reduce, so every rank makes the same decision.

    Returning ``None`` from ``training_step`` also skips the update, but only on one
    process (Lightning does not support it under DDP), it leaves BatchNorm statistics
    spoilt, and it needs the module's cooperation; this guard works for any module.

    Args:
        max_non_finite_steps: raise `NonFiniteStepError` at this many non-finite steps
            in a row (0: never).
    """

    def __init__(self, max_non_finite_steps: int = 10) -> None:
        if max_non_finite_steps < 0:
            raise ValueError(f"max_non_finite_steps must be >= 0, got {max_non_finite_steps}.")
        self.max_non_finite_steps = max_non_finite_steps
        self.consecutive = 0
        self.skipped = 0
        self.buffers_before: BufferSnapshot | None = None

    def watch(self, snapshot: BufferSnapshot) -> None:
        """Restore the buffers from ``snapshot`` (the step's, retaken at every step) when a
        step's update is cancelled."""
        self.buffers_before = snapshot

    def check(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the gradients about to be applied are non-finite; if so the update is
        cancelled (see the class docs)."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        finite = True
        if grads:
            norms = torch._foreach_norm(grads)
            finite = bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))
        if finite:
            return False
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        if self.buffers_before is not None:
            self.buffers_before.restore()
        self.skipped += 1
        return True

    def tally(self, non_finite: bool) -> None:
        """Count a step towards the run of non-finite steps (a finite one ends the run)."""
        self.consecutive = self.consecutive + 1 if non_finite else 0

    @property
    def exhausted(self) -> bool:
        """The run of non-finite steps has reached ``max_non_finite_steps``."""
        return 0 < self.max_non_finite_steps <= self.consecutive

    def check_and_warn(self, optimizer: Any, step: int) -> bool:
        """`check`, with a warning when the step's update is skipped."""
        skipped = self.check(optimizer)
        if skipped:
            rank_zero_warn(
                f"DistPro search: non-finite training loss or gradient at step {step}; the "
                "optimizer update was skipped (the student keeps its weights and BatchNorm "
                f"statistics; {self.skipped} so far). Check the data for NaN/inf, or lower the "
                "student lr."
            )
        return skipped

    def stop_if_exhausted(self, step: int, where: str) -> None:
        """Raise `NonFiniteStepError` after ``max_non_finite_steps`` bad steps in a row."""
        if self.exhausted:
            raise NonFiniteStepError(
                f"DistPro search stopped: {self.consecutive} consecutive steps (up to step "
                f"{step}) had a non-finite training loss, gradient or hypergradient; their "
                f"updates were skipped. The process so far is saved at {where}. Check the data "
                "for NaN/inf and lower the student lr (or epsilon), or raise "
                "max_non_finite_steps."
            )
