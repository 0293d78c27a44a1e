"""A diverging student, said once: the task loss of a distilled run far above a uniform guess.

A distillation term several times the task loss can push a student's logits out of range in
the first steps (issue 34's third pair: the task loss climbed from 2.6 to 154 within four
steps of the recommended space at uniform weights, and the run ended below the student
trained alone). The logged ``train/loss`` hides it: the distillation term is large anyway.
`DivergenceWatch` keeps the peak task loss on the device (no synchronisation per step),
reads it at the Trainer's logging cadence and at every epoch end, and warns once per fit
when it exceeds ``factor`` times ``ln(num_classes)``, the cross-entropy of a uniform guess:
a loss that high means confidently wrong logits, not a slow start. Under DDP the warning is
rank zero's, from rank zero's batches (the ranks train one model, so they diverge together).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distpro_lightning.errors import DistProError

#: the task loss, as a multiple of ``ln(num_classes)``, above which a run is diverging
DIVERGENCE_FACTOR = 5.0


class DivergenceWarning(DistProError, UserWarning):
    """The student's task loss went far above a uniform guess: training is diverging.
    Silence it with ``warnings.filterwarnings("ignore", category=DivergenceWarning)``; under
    ``filterwarnings("error")`` it is raised, and ``except DistProError`` catches it."""


class DivergenceWatch:
    """The peak task loss of one fit, and the one message when it marks a divergence."""

    def __init__(self, num_classes: int, factor: float = DIVERGENCE_FACTOR) -> None:
        if num_classes < 2 or not factor > 0:
            raise ValueError(
                f"DivergenceWatch needs num_classes >= 2 and factor > 0, got "
                f"{num_classes} and {factor}."
            )
        self.threshold = factor * math.log(num_classes)
        self.factor = factor
        self.peak: Tensor | None = None
        self.warned = False

    def reset(self) -> None:
        """A new fit: forget the peak and warn again."""
        self.peak, self.warned = None, False

    def update(self, task_loss: Tensor) -> None:
        """Fold one step's task loss into the peak, on its device (no host synchronisation).
        A non-finite loss is left out: it comes from a bad batch (a NaN input), which the
        search skips as a non-finite step, not from logits that grew; a divergence passes
        through large finite losses first."""
        value = task_loss.detach().float()
        value = torch.where(torch.isfinite(value), value, torch.zeros_like(value))
        self.peak = value if self.peak is None else torch.maximum(self.peak, value)

    def message(self, step: int, remedy: str) -> str | None:
        """The warning, the first time the peak is above the threshold (``None`` otherwise);
        reading the peak synchronises, so call it at a logging cadence, not every step."""
        if self.warned or self.peak is None:
            return None
        peak = float(self.peak)
        if not peak > self.threshold:
            return None
        self.warned = True
        return (
            f"The student's task loss reached {peak:.4g} by step {step}, above "
            f"{self.factor:g} x ln(num_classes) = {self.threshold:.3g} (a uniform guess "
            "scores ln(num_classes)): training is diverging, the distillation term pushes "
            f"the student's logits out of range. {remedy} See docs/troubleshooting.md, "
            "'The task loss explodes in the first steps'."
        )
