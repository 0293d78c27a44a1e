"""Diagnostics of the search signal: is alpha following a signal or noise?

Every ``every_n_steps`` search steps, `SearchDiagnostics` measures, at the same
student weights and the same pre-update logits ``a~_t`` the step used:

* **agreement**: the cosine between the step's hypergradient and the hypergradient on a
  second, independent held-out batch (same training batch). Near 1: the held-out batches
  agree on the direction; near 0: the direction is mostly the noise of one batch;
* **successive**: the cosine between this step's hypergradient and the previous step's;
* **held-out loss after the real update** at the old logits ``a~_t`` and at the new ones
  ``a~_{t+1}``, on the step's own held-out batch: the update DistPro assumes helps is one
  with ``val_loss_new < val_loss_old``. The "real update" is simulated with the student
  optimizer's own rule (SGD with its momentum buffer and weight decay, as the virtual step)
  and nothing is changed.

After a search, `moving_fraction` says which pathways' weights moved beyond what a
random walk with the same step sizes would give. `summarize` condenses all of it.
The rows are stored in the process file's provenance (``provenance["diagnostics"]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from distpro_lightning.modules.contract import DistillationObjective
from distpro_lightning.search.hypergradient import (
    HypergradientOptions,
    SearchBatches,
    SGDHyper,
    compute_hypergradient,
    frozen_batchnorm_stats,
    sgd_virtual_step,
)


@dataclass
class DiagnosticRow:
    """The measures of one diagnosed step (see the module docstring). A measure that came
    out non-finite (a NaN or Inf in a held-out batch) is ``None`` and named in
    ``non_finite``: JSON has no NaN, and one bad batch must not cost the file."""

    step: int
    agreement: float | None
    successive: float | None
    val_loss_old: float | None
    val_loss_new: float | None
    non_finite: list[str] = field(default_factory=list)

    @classmethod
    def finite(cls, step: int, **measures: float | None) -> DiagnosticRow:
        """The row of these measures, each non-finite one stored as ``None`` and named in
        ``non_finite``, with a warning that names the held-out step."""
        bad = [k for k, v in measures.items() if v is not None and not math.isfinite(v)]
        if bad:
            rank_zero_warn(
                f"Search diagnostics of step {step}: {', '.join(bad)} came out non-finite "
                "(a NaN or Inf in the step's held-out batch or in the independent one drawn "
                "for the diagnostics?). Stored as null with the row's 'non_finite' flag; the "
                "search goes on. Check the held-out data (its samples must be finite)."
            )
        kept = {k: None if k in bad else v for k, v in measures.items()}
        return cls(step=step, non_finite=bad, **kept)  # type: ignore[arg-type]


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two vectors (0 when either is zero; NaN when either holds a
    non-finite value, e.g. a NaN held-out batch: "unknown", never "no agreement")."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return float("nan")
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


def held_out_loss_after_update(
    module: DistillationObjective,
    batches: SearchBatches,
    virtual: Mapping[str, SGDHyper],
    logits: Tensor,
) -> float:
    """``L_val(theta - xi * D(grad L_train(theta, w(logits))))`` on the held-out batch:
    the held-out loss the real update of the student would give with these logits (student
    parameters, buffers and ``.grad`` are left as they are)."""
    theta = module.search_parameters().student
    weights = module.alpha_weights(logits).detach()
    with frozen_batchnorm_stats(module.student, module.distill_heads), torch.enable_grad():
        loss = module.objective(
            batches.x, batches.y, batches.teacher, weights, module.active_pathways(logits)
        ).loss
        grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
        grads_by_name = {
            k: torch.zeros_like(p) if g is None else g.detach()
            for (k, p), g in zip(theta.items(), grads)
        }
        student = {k: p.detach() for k, p in theta.items()}
        new, _ = sgd_virtual_step(student, grads_by_name, virtual)
        with torch.no_grad():
            val = module.task_loss(module.student_forward(batches.x_val, new), batches.y_val)
    return float(val)


class SearchDiagnostics:
    """Collects `DiagnosticRow` s every ``every_n_steps`` search steps.

    Args:
        every_n_steps: diagnose every n-th step (each costs one more hypergradient and two
            training gradients).
        options: the search's hypergradient options (method, epsilon, DDP averaging).
    """

    def __init__(self, every_n_steps: int, options: HypergradientOptions) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        # its own passes stand for no real update: frozen BatchNorm statistics, no kept graph
        self.options = replace(options, keep_full_gradient=False, keep_training_forward=False)
        self.rows: list[DiagnosticRow] = []
        self._previous: Tensor | None = None
        #: draws the independent held-out batch of `diagnose_step` (raw, on the device)
        self.draw_held_out: Callable[[], Any] | None = None

    def due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def observe(
        self,
        module: DistillationObjective,
        batches: SearchBatches,
        virtual: Mapping[str, SGDHyper],
        second_held_out: Callable[[], tuple[Tensor, Any]],
        record: Any,
        old_logits: Tensor,
    ) -> DiagnosticRow | None:
        """Diagnose the step whose ``record`` (its hypergradient and new logits) was just
        computed from ``old_logits``; ``second_held_out()`` draws the independent batch.
        Returns the row when this step is due, else ``None`` (the successive cosine is kept
        up to date at every step)."""
        hg = record.hypergradient
        if hg is None or not bool(torch.isfinite(hg).all()):
            return None
        previous, self._previous = self._previous, hg.detach().clone()
        if not self.due(record.step):
            return None
        new_logits = module.alpha_logits.detach().clone()
        xv2, yv2 = second_held_out()
        other = SearchBatches(batches.x, batches.y, batches.teacher, xv2, yv2)
        # at the step's old logits, given explicitly: the module's are not swapped
        hg2 = compute_hypergradient(module, other, virtual, self.options, old_logits).hypergradient
        row = DiagnosticRow.finite(
            record.step,
            agreement=cosine(hg, hg2.to(hg.device)),
            successive=cosine(hg, previous.to(hg.device)) if previous is not None else None,
            val_loss_old=held_out_loss_after_update(module, batches, virtual, old_logits),
            val_loss_new=held_out_loss_after_update(module, batches, virtual, new_logits),
        )
        self.rows.append(row)
        return row

    def diagnose_step(self, module: Any, record: Any) -> DiagnosticRow | None:
        """`observe` for a search step as the callback has it: the step's own `StepInputs`
        (``record.inputs``: its batches and teacher outputs, virtual-step settings and old
        logits, so nothing is computed twice); logs the row through the module. The
        independent held-out batch comes from ``draw_held_out`` (set by the caller)."""
        draw_held_out = self.draw_held_out
        assert draw_held_out is not None, "set draw_held_out before diagnosing"
        inputs = record.inputs
        if inputs is None:  # a warm-up or held step: alpha stayed, nothing to diagnose
            return None
        row = self.observe(
            module, inputs.batches, inputs.virtual, lambda: module.split_batch(draw_held_out()),
            record, inputs.old_logits,
        )  # fmt: skip
        if row is not None:
            log_diagnostics(module, row)
        return row

    def to_record(self) -> dict[str, Any]:
        """The JSON form stored in ``provenance["diagnostics"]``."""
        return {"every_n_steps": self.every_n_steps, "rows": [asdict(r) for r in self.rows]}

    def load_record(self, record: Mapping[str, Any]) -> None:
        self.rows = [DiagnosticRow(**r) for r in record.get("rows", [])]


def log_diagnostics(module: Any, row: DiagnosticRow) -> None:
    """Log a row as ``search/diag_*`` metrics through the module (Lightning's cadence)."""
    gain = None
    if row.val_loss_old is not None and row.val_loss_new is not None:
        gain = row.val_loss_old - row.val_loss_new
    values = {
        "search/diag_agreement": row.agreement,
        "search/diag_val_loss_gain": gain,
        "search/diag_successive_cos": row.successive,
    }
    kept = {k: v for k, v in values.items() if v is not None}
    if kept:
        module.log_dict(kept)


def moving_fraction(weights: Tensor, z: float = 2.0) -> float:
    """The fraction of pathways whose weight moved beyond its noise over a process.

    A pathway "moves" when its net change ``|w_T - w_0|`` exceeds ``z`` times
    ``sqrt(sum_t dw_t^2)``: the standard deviation of the net change of a walk taking the
    same step sizes with random signs. A steady drift of T steps clears it by about
    ``sqrt(T)``; a pathway that only jitters does not."""
    if weights.shape[0] < 2:
        return 0.0
    steps = weights[1:] - weights[:-1]
    net = (weights[-1] - weights[0]).abs()
    noise = steps.pow(2).sum(0).sqrt()
    return float((net > z * noise).float().mean())


def summarize(process: Any) -> dict[str, float]:
    """Means of the diagnosed rows of a process file, and its moving fraction (a measure
    stored as ``null``, non-finite, is left out of its mean; NaN when none is left)."""
    rows = process.provenance.get("diagnostics", {}).get("rows", [])
    out: dict[str, float] = {"moving_fraction": moving_fraction(process.weights())}
    if not rows:
        return out
    agree = [r["agreement"] for r in rows if r.get("agreement") is not None]
    succ = [r["successive"] for r in rows if r.get("successive") is not None]
    gains = [
        r["val_loss_old"] - r["val_loss_new"]
        for r in rows
        if r.get("val_loss_old") is not None and r.get("val_loss_new") is not None
    ]
    out.update(
        diagnosed_steps=float(len(rows)),
        agreement=_mean(agree),
        successive=_mean(succ),
        helps_fraction=_mean([float(g > 0) for g in gains]),
        mean_val_loss_gain=_mean(gains),
    )
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
