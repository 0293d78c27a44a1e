"""The trainer-free search step: from a training batch and a held-out batch to the updated
pathway logits. `ProcessSearchCallback` runs it at every optimizer
step; the step-cost benchmark and the tests run the very same object without a Trainer.

Python:

```python
step = SearchStep(module, optimizer, SearchSettings(hypergradient="exact"))
record = step(train_batch, held_out_batch, step=0)
record.logits  # a~_{t+1}, already copied into module.alpha_logits
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from distpro_lightning.modules.contract import SearchableModule
from distpro_lightning.modules.step_context import (
    BufferSnapshot,
    ReusedGradient,
    SharedForward,
    StepContext,
    install_step_context,
)
from distpro_lightning.search.hypergradient import (
    METHODS,
    AdamHyper,
    HypergradientOptions,
    HypergradientResult,
    SearchBatches,
    SGDHyper,
    compute_hypergradient,
)


@dataclass(frozen=True)
class SearchSettings:
    """The settings of the search step (see `ProcessSearchCallback`
    for each)."""

    hypergradient: str = "finite_difference"
    epsilon: float = 0.01
    alpha_lr: float = 0.05
    alpha_optimizer: str = "adam"
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 0.0
    average_virtual_gradient: bool = True
    average_val_gradient: bool = True
    reuse_training_gradient: bool = False
    share_training_forward: bool = True

    def __post_init__(self) -> None:
        for name in ("alpha_lr", "epsilon", "alpha_weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(
                    f"ProcessSearchCallback({name}=...) takes a number, got "
                    f"{type(value).__name__} {value!r}; e.g. {name}=0.01."
                )
        if self.hypergradient not in METHODS:
            raise ValueError(f"hypergradient must be one of {METHODS}, got {self.hypergradient!r}.")
        if self.alpha_optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"alpha_optimizer must be 'adam' or 'sgd', got {self.alpha_optimizer!r}."
            )
        if not (self.alpha_lr > 0 and math.isfinite(self.alpha_lr)):
            raise ValueError(f"alpha_lr must be a positive number, got {self.alpha_lr}.")
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"epsilon must be a positive number, got {self.epsilon}.")

    def alpha_optimizer_for(self, alpha: torch.nn.Parameter) -> torch.optim.Optimizer:
        """The logits' own optimizer."""
        if self.alpha_optimizer == "adam":
            return torch.optim.Adam(
                [alpha],
                lr=self.alpha_lr,
                betas=tuple(self.alpha_betas),
                weight_decay=self.alpha_weight_decay,
            )
        return torch.optim.SGD([alpha], lr=self.alpha_lr, weight_decay=self.alpha_weight_decay)


def virtual_step_settings(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor], warn: bool = False
) -> dict[str, SGDHyper | AdamHyper]:
    """Each parameter's settings for the virtual step, read from the student optimizer now:
    ``torch.optim.SGD`` (lr, momentum buffer, dampening, weight decay, Nesterov) and
    ``torch.optim.Adam`` / ``AdamW`` (lr, betas, eps, L2 or decoupled weight decay, the
    moments and step count) are followed exactly.

    Other optimizers (and Adam with ``amsgrad``) are approximated by a plain gradient step
    with their current lr (no momentum, weight decay or adaptive scaling); with ``warn``
    this says so.
    """
    if isinstance(optimizer, torch.optim.SGD):
        by_id = _sgd_settings(optimizer)
    elif isinstance(optimizer, torch.optim.Adam) and not any(
        g.get("amsgrad") for g in optimizer.param_groups
    ):
        by_id = _adam_settings(optimizer)
    else:
        if warn:
            rank_zero_warn(
                f"DistPro search: the student optimizer is {type(optimizer).__name__}; the "
                "virtual step follows SGD, Adam and AdamW (without amsgrad) exactly and "
                "approximates others by a plain gradient step with their lr (no momentum, "
                "weight decay or adaptive scaling). Use one of those for the exact virtual step."
            )
        by_id = {
            id(p): SGDHyper(lr=float(group["lr"]))
            for group in optimizer.param_groups
            for p in group["params"]
        }
    missing = [k for k, p in params.items() if id(p) not in by_id]
    if missing:
        raise RuntimeError(
            f"Parameters {missing[:5]} of the student are trained by the search but not by the "
            "optimizer: configure_optimizers must optimise the student and the pathway heads."
        )
    return {k: by_id[id(p)] for k, p in params.items()}


def _refuse_maximize(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> None:
    if group.get("maximize"):
        raise RuntimeError(
            f"{type(optimizer).__name__}(maximize=True) is not supported by the search: the "
            "virtual step descends the training loss."
        )


def _sgd_settings(optimizer: torch.optim.Optimizer) -> dict[int, SGDHyper | AdamHyper]:
    by_id: dict[int, SGDHyper | AdamHyper] = {}
    for group in optimizer.param_groups:
        _refuse_maximize(optimizer, group)
        for p in group["params"]:
            by_id[id(p)] = SGDHyper(
                lr=float(group["lr"]),
                momentum=float(group["momentum"]),
                dampening=float(group["dampening"]),
                weight_decay=float(group["weight_decay"]),
                nesterov=bool(group["nesterov"]),
                buf=optimizer.state.get(p, {}).get("momentum_buffer"),
            )
    return by_id


def _adam_settings(optimizer: torch.optim.Optimizer) -> dict[int, SGDHyper | AdamHyper]:
    decoupled_default = isinstance(optimizer, torch.optim.AdamW)
    by_id: dict[int, SGDHyper | AdamHyper] = {}
    for group in optimizer.param_groups:
        _refuse_maximize(optimizer, group)
        beta1, beta2 = (float(b) for b in group["betas"])
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            step = state.get("step", 0)
            by_id[id(p)] = AdamHyper(
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                decoupled=bool(group.get("decoupled_weight_decay", decoupled_default)),
                step=int(step.item() if isinstance(step, Tensor) else step),
                exp_avg=state.get("exp_avg"),
                exp_avg_sq=state.get("exp_avg_sq"),
            )
    return by_id


def settings_in_force(
    module: SearchableModule, settings: SearchSettings, precision: str = "32-true"
) -> SearchSettings:
    """The one rule for whether the shared training forward can be in force: ``settings``
    with ``share_training_forward`` off (said once, with the reason) where the training step
    would not reproduce the search's pass: compiled pathway heads (a compiled graph's
    backward runs only once: inductor donates its saved buffers) and the mixed precisions
    (``16-mixed``, ``bf16-mixed``: the search's passes run in fp32, the training step under
    autocast; under bf16 autocast the finite differences were 4x further from the float64
    hypergradient than in fp32). With
    ``reuse_training_gradient`` the real update runs no forward of its own (it takes the
    virtual step's gradient), so there is none to share: off, as documented there."""
    if not settings.share_training_forward:
        return settings
    if settings.reuse_training_gradient:
        return replace(settings, share_training_forward=False)
    if getattr(module.distill_heads, "compiled", False):
        reason = "with compile_heads=True: a compiled graph's backward runs only once (donated "
        reason += "buffers)"
    elif precision in ("16-mixed", "bf16-mixed"):
        reason = f"under precision={precision!r} with hypergradient={settings.hypergradient!r}: "
        reason += "the search's training pass runs in fp32 and the training step under autocast"
    else:
        return settings
    rank_zero_warn(
        f"share_training_forward is off {reason}, so the real update runs its own forward. "
        "Set share_training_forward=False (search.hypergradient.share_training_forward) to "
        "silence this."
    )
    return replace(settings, share_training_forward=False)


def mean_over_ranks(reduce: Callable[[Tensor], Tensor]) -> Callable[[list[Tensor]], list[Tensor]]:
    """Average a list of gradients over ranks with one flat all-reduce (``reduce``: the mean
    of one tensor over ranks, e.g. ``strategy.reduce(t, reduce_op="mean")``)."""

    def average(grads: list[Tensor]) -> list[Tensor]:
        flat = reduce(torch.cat([g.reshape(-1) for g in grads]))
        out, offset = [], 0
        for g in grads:
            out.append(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return out

    return average


@dataclass(frozen=True)
class StepInputs:
    """What a search step computed its hypergradient from: the batches with the teacher
    outputs, the virtual step's settings and the logits before the update (for diagnostics,
    which measure the same step without redoing its work)."""

    batches: SearchBatches
    virtual: Mapping[str, SGDHyper | AdamHyper]
    old_logits: Tensor


@dataclass
class SearchRecord:
    """What one search step did: the logits after it (``[P]``, the row the process
    records), and, when alpha was updated, the hypergradient (averaged over ranks), the
    held-out and training losses and the step's `StepInputs`. ``skipped``: a non-finite
    hypergradient left alpha as it was."""

    step: int
    logits: Tensor
    hypergradient: Tensor | None = None
    val_loss: Tensor | None = None
    train_loss: Tensor | None = None
    skipped: bool = False
    inputs: StepInputs | None = None


class SearchStep:
    """One DistPro search step, without a Trainer: teacher outputs once, the hypergradient
    (`compute_hypergradient`), the update of
    ``module.alpha_logits`` by the logits' own optimizer, and the step context the module's
    training step reads (the teacher outputs; with ``share_training_forward`` the training
    pass with its graph; with ``reuse_training_gradient`` the training gradient).

    Args:
        module: a `SearchableModule`.
        optimizer: the student optimizer (read for the virtual step, never stepped here).
        settings: the search settings (`requested`; `settings` is what is in force:
            `settings_in_force`, and without the shared forward after `stop_sharing_forward`).
        reduce_mean: under DDP, the mean of a tensor over ranks; ``None``: one process.
        autocast: the precision context of the search's forward passes.
        precision: the Trainer's precision (``trainer.precision``), for `settings_in_force`.

    The step owns its state: the logits' master copy ``alpha`` (float32, stepped by the
    logits' optimizer and copied into ``module.alpha_logits``) and one `BufferSnapshot` of
    the student's and heads' buffers per step (`buffers_before`, taken before any pass of
    the step), which the shared forward and the `UpdateGuard` restore from. The context it
    builds for the training step is returned by `run` and handed to the module by its
    caller (`install_step_context`; calling the step does both).
    """

    def __init__(
        self,
        module: SearchableModule,
        optimizer: torch.optim.Optimizer,
        settings: SearchSettings,
        reduce_mean: Callable[[Tensor], Tensor] | None = None,
        autocast: Callable[[], Any] = nullcontext,
        precision: str = "32-true",
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.requested = settings  # what checkpoints and the provenance record
        self.settings = settings = settings_in_force(module, settings, str(precision))
        self.reduce_mean = reduce_mean
        average = mean_over_ranks(reduce_mean) if reduce_mean is not None else None
        self.options = HypergradientOptions(
            method=settings.hypergradient,
            epsilon=settings.epsilon,
            reduce_grads=average if settings.average_virtual_gradient else None,
            reduce_val_grads=average if settings.average_val_gradient else None,
            keep_full_gradient=settings.reuse_training_gradient,
            keep_training_forward=settings.share_training_forward,
            autocast=autocast,
        )
        self.alpha = torch.nn.Parameter(module.alpha_logits.detach().clone().float())
        self.alpha_optimizer = settings.alpha_optimizer_for(self.alpha)
        self.skipped_updates = 0
        self._warned = False
        self.buffers_before = BufferSnapshot()  # one copy per step, its storage reused

    @property
    def sharing_forward(self) -> bool:
        """Whether the shared training forward is in force now (`settings_in_force`, and
        not stopped by `stop_sharing_forward`)."""
        return self.settings.share_training_forward

    def __call__(
        self, batch: Any, held_out: Any | None, step: int, batch_idx: int = 0
    ) -> SearchRecord:
        """`run` the step and hand its context to the module (``module.step_context``), as
        trainer-free code wants it; the callback runs `run` and hands over itself."""
        record, context = self.run(batch, held_out, step, batch_idx)
        install_step_context(self.module, context)
        return record

    def run(
        self, batch: Any, held_out: Any | None, step: int, batch_idx: int = 0
    ) -> tuple[SearchRecord, StepContext]:
        """Run the step on the training ``batch`` and the ``held_out`` batch (both on the
        module's device) and return its row and the `StepContext` it built for the training
        step (not yet handed over). ``held_out=None`` (warm-up, a held step): only the
        teacher outputs are computed and alpha stays."""
        module = self.module
        self.buffers_before.take((module.student, module.distill_heads))  # before any pass
        x, y = module.split_batch(batch)
        teacher = module.teacher_outputs(x)
        context = StepContext(step, batch_idx, tuple(x.shape), teacher, inputs=x)
        if held_out is None:
            return SearchRecord(step, module.alpha_logits.detach().clone()), context
        xv, yv = module.split_batch(held_out)
        theta = module.search_parameters()
        virtual = virtual_step_settings(self.optimizer, theta.student, warn=not self._warned)
        self._warned = True
        old_logits = module.alpha_logits.detach().clone()
        active = module.active_pathways()  # of the logits the training pass runs with
        batches = SearchBatches(x, y, teacher, xv, yv)
        result = compute_hypergradient(module, batches, virtual, self.options)
        if result.training_gradient is not None:
            context.reused = ReusedGradient(
                theta, result.training_gradient, result.train_loss, result.train_task_loss
            )
        record = self._update_alpha(step, result)
        record.inputs = StepInputs(batches, virtual, old_logits)
        if result.training_forward is not None:
            shared = SharedForward(result.training_forward, active, self.buffers_before)
            if module.active_pathways() == active:
                context.forward = shared
            else:  # the update pruned or revived a pathway: the real update runs its own
                shared.discard()
        return record, context

    def stop_sharing_forward(self) -> None:
        """Turn ``share_training_forward`` off from the next step on (the module's training
        step does not use the shared forward); `requested` keeps the setting asked for."""
        self.settings = replace(self.settings, share_training_forward=False)
        self.options = replace(self.options, keep_training_forward=False)

    def _update_alpha(self, step: int, result: HypergradientResult) -> SearchRecord:
        hg = result.hypergradient.to(self.alpha.device)
        if self.reduce_mean is not None:
            hg = self.reduce_mean(hg)
        skipped = not bool(torch.isfinite(hg).all())
        if skipped:
            self.skipped_updates += 1
            rank_zero_warn(
                f"DistPro search: non-finite hypergradient at step {step}; alpha update "
                f"skipped ({self.skipped_updates} so far). Lower the student lr or epsilon, "
                "or check the data for NaNs."
            )
        else:
            self.alpha_optimizer.zero_grad(set_to_none=False)
            self.alpha.grad = hg.to(self.alpha.dtype).clone()
            self.alpha_optimizer.step()
            with torch.no_grad():
                self.module.alpha_logits.copy_(self.alpha.detach())
        logits = self.module.alpha_logits.detach().clone()
        return SearchRecord(step, logits, hg, result.val_loss, result.train_loss, skipped)

    def state_dict(self) -> dict[str, Any]:
        """The logits' optimizer state and the count of skipped updates."""
        return {
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "skipped_updates": self.skipped_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """Restore `state_dict`. The settings' lr, betas and weight decay apply (not
        the checkpoint's); a checkpoint of the other logits optimizer (Adam vs SGD) leaves
        this one's state fresh. Returns whether the optimizer state was loaded."""
        self.skipped_updates = int(state["skipped_updates"])
        saved = state["alpha_optimizer"]
        kind = "adam" if "betas" in saved["param_groups"][0] else "sgd"
        if kind != self.settings.alpha_optimizer:
            return False
        self.alpha_optimizer.load_state_dict(saved)
        for group in self.alpha_optimizer.param_groups:
            group["lr"] = self.settings.alpha_lr
            group["weight_decay"] = self.settings.alpha_weight_decay
            if kind == "adam":
                group["betas"] = tuple(self.settings.alpha_betas)
        return True


def hypergradient_of(
    module: SearchableModule, train_batch: Any, val_batch: Any, lr: float, settings: SearchSettings
) -> Tensor:
    """Gradient w.r.t. ``module.alpha_logits`` of ``L_val(theta - lr * grad L_train)`` (a
    plain SGD virtual step) by ``settings``' method; parameters, ``.grad``, buffers and
    ``alpha_logits`` are left unchanged."""
    from distpro_lightning.search.hypergradient import SearchBatches

    x, y = module.split_batch(train_batch)
    xv, yv = module.split_batch(val_batch)
    batches = SearchBatches(x, y, module.teacher_outputs(x), xv, yv)
    virtual = {k: SGDHyper(lr=lr) for k in module.search_parameters().student}
    options = HypergradientOptions(settings.hypergradient, settings.epsilon)
    return compute_hypergradient(module, batches, virtual, options).hypergradient
