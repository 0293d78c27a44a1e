"""The checks of `ProcessSearchCallback` (and of the replay) made
before the first step, the warnings for settings that make the search meaningless, and the
reconciliation of a resume's settings with the checkpoint's."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from distpro_lightning.modules.contract import (
    SearchableModule,
    check_optimized,
    check_sole_weight_driver,
    missing_members,
)
from distpro_lightning.modules.run_length import planned_steps
from distpro_lightning.modules.step_context import StepContext
from distpro_lightning.search.step import SearchSettings

_HALF_PRECISIONS = ("16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")

#: Adam (the paper's logits optimizer) moves every logit by about ``alpha_lr`` per step
#: whatever the hypergradient's size, so from ``alpha_lr >= 1`` one step can change a
#: pathway weight e-fold and a few steps drive weights to 0 (or to their maximum): the
#: process becomes an on/off switch rather than a schedule. The paper's and our default is
#: 0.05; the shipped sweep searches 0.005-0.5.
ALPHA_LR_WARN = 1.0

#: The finite-difference radius relative to the student's parameter norm below which the
#: hypergradient is float32 rounding noise. Measured on ResNet-8/Digits (||theta|| = 28):
#: relative error to the exact hypergradient 0.03 at epsilon/||theta|| = 3.6e-6, 0.23 at
#: 3.6e-7, 1.8 at 3.6e-8 (cosine 0.2: noise), and exactly 0 (alpha never moves) at 3.6e-11.
EPSILON_RATIO_WARN = 1e-6

#: The finite-difference radius relative to the student's parameter norm above which the
#: perturbation is no longer local: the difference quotient measures a different function.
#: Measured on ResNet-8/Digits (||theta|| = 28): cosine 0.23 with the exact hypergradient at
#: epsilon = 100 (ratio 3.6), exactly 0 at 1e6. The default 0.01 is a ratio of 3.6e-4.
EPSILON_RATIO_HIGH_WARN = 0.1

#: ``alpha_lr`` with the SGD alpha optimizer from which one step moves a logit by more than
#: about one unit for hypergradients of the usual size (lr * |h| with |h| ~ 1e-2): the
#: weights snap to one pathway (one-hot) within a few steps.
ALPHA_LR_SGD_WARN = 100.0

#: Every pathway weight below this fraction of its initial weight: distillation is off.
COLLAPSED_FRACTION = 1e-3

#: One pathway holding more than this share of the total weight: the process is one-hot.
ONE_HOT_SHARE = 0.99


@dataclass(frozen=True)
class SearchRunOptions:
    """When and on what `ProcessSearchCallback` searches (its arguments of the same names):
    ``warmup_steps``, the held-out ``seed``, ``init_process``, ``val_batches_per_step``,
    ``diagnostics_every_n_steps`` and the ``held_out`` source."""

    warmup_steps: int = 0
    seed: int = 0
    init_process: str | None = None
    val_batches_per_step: int = 1
    diagnostics_every_n_steps: int = 0
    held_out: Any = None
    search_every_n_steps: int = 1
    proxy: bool = False

    def __post_init__(self) -> None:
        bad = {
            "search_every_n_steps >= 1": self.search_every_n_steps < 1,
            "warmup_steps >= 0": self.warmup_steps < 0,
            "val_batches_per_step >= 1": self.val_batches_per_step < 1,
            "diagnostics_every_n_steps >= 0": self.diagnostics_every_n_steps < 0,
        }
        for rule, broken in bad.items():
            if broken:
                name = rule.split()[0]
                raise ValueError(
                    f"{name} must be {rule[len(name) + 1 :]}, got {getattr(self, name)}."
                )

    def searches_at(self, step: int) -> bool:
        """Whether optimizer step ``step`` updates alpha: after the warm-up, every
        ``search_every_n_steps``-th step (counted from the first step after the warm-up);
        in between the weights are held."""
        return (
            step >= self.warmup_steps
            and (step - self.warmup_steps) % self.search_every_n_steps == 0
        )

    def record(self, max_non_finite_steps: int) -> dict[str, Any]:
        """What the process file's provenance records of these options (``run_settings``):
        every option that shapes a search, so two searches that differ only there can be
        told apart, and a resume that changes them is warned about."""
        return {
            "warmup_steps": self.warmup_steps,
            "search_every_n_steps": self.search_every_n_steps,
            "held_out_seed": self.seed,
            "val_batches_per_step": self.val_batches_per_step,
            "held_out": self.held_out
            if isinstance(self.held_out, str | None)
            else type(self.held_out).__name__,
            "max_non_finite_steps": max_non_finite_steps,
            "proxy": self.proxy,
        }


#: The strategies the search runs under, as said in its refusal.
SUPPORTED_STRATEGIES = (
    "single device ('auto' on one device), DDP ('ddp', 'ddp_spawn', "
    "'ddp_find_unused_parameters_true' for pruning)"
)


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy the search does not support: it needs every rank to hold the whole
    student (its virtual step and perturbed passes read and write the full parameters) and
    one process per device. FSDP and DeepSpeed shard the parameters, model parallelism
    splits them, XLA is untested; DeepSpeed is a subclass of DDP, so it is looked at
    first."""
    from lightning.pytorch import strategies as st

    refused = (st.FSDPStrategy, st.DeepSpeedStrategy, st.ModelParallelStrategy, st.XLAStrategy)
    refused += (st.SingleDeviceXLAStrategy,)
    if isinstance(strategy, refused) or not isinstance(
        strategy, st.DDPStrategy | st.SingleDeviceStrategy
    ):
        raise RuntimeError(
            f"ProcessSearchCallback does not support the {type(strategy).__name__}: the search "
            "step reads and writes the student's whole parameters on every rank (a virtual "
            "step, perturbed passes), which sharded (FSDP, DeepSpeed) or split "
            "(model-parallel) parameters do not allow. Supported: "
            f"{SUPPORTED_STRATEGIES}. Search under one of them; the replay "
            "(ProcessScheduleCallback) runs under any strategy."
        )


def check_setup(trainer: pl.Trainer, module: Any, settings: SearchSettings, callback: Any) -> None:
    """Refuse a strategy, module, optimizer or precision the search cannot run with, and
    another callback that sets the pathway weights beside ``callback`` (the search)."""
    check_strategy(trainer.strategy)
    check_sole_weight_driver(trainer.callbacks, callback)
    if not isinstance(module, SearchableModule):
        raise TypeError(
            "ProcessSearchCallback needs a module with DistProMixin (e.g. DistProModule); "
            f"{type(module).__name__} lacks {', '.join(missing_members(module))}."
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
    if settings.reuse_training_gradient and not module.applies_reused_gradient:
        raise RuntimeError(
            "reuse_training_gradient=True needs a module whose training_step applies the "
            "reused gradient (DistProModule, or set applies_reused_gradient = True and "
            "return self.take_reused_gradient().surrogate_loss()); otherwise leave it False."
        )
    if module.normalization == "uniform":
        raise ValueError(
            "normalization='uniform' gives every pathway the same weight whatever alpha is, so "
            "the search has nothing to learn (its hypergradient is 0). Search with another "
            "normalization (the paper's: distillation.normalization=biased_softmax); for "
            "equal weights, replay with ProcessScheduleCallback(mode='uniform') instead."
        )
    check_optimized(module, trainer.optimizers, "ProcessSearchCallback")


def check_not_all_pruned(module: SearchableModule) -> None:
    """Refuse a start where ``prune_threshold`` prunes every pathway: no pathway would be
    computed, so neither the distillation nor the search could do anything."""
    tau = module.prune_threshold
    if tau is not None and not bool((module.alpha_logits > tau).any()):
        top = float(module.alpha_logits.max())
        raise ValueError(
            f"distillation.prune_threshold={tau:g} prunes every pathway from the first step: "
            f"the logits start at {top:g} or below, and a pathway is computed only while its "
            f"logit is above the threshold. Use a threshold below {top:g} (the paper: 0.5) "
            "or none."
        )


def warn_if_never_searching(trainer: pl.Trainer, run: SearchRunOptions) -> None:
    """Warn when the warm-up covers the whole fit (alpha would never move, and the process
    would be its start held under a search's name), or when ``every_n_steps`` leaves one
    alpha update in the whole fit."""
    total = planned_steps(trainer)
    if total is None:  # a run of unknown length
        return
    w, k = run.warmup_steps, run.search_every_n_steps
    if w >= total:
        rank_zero_warn(
            f"search.schedule.warmup_steps={w} covers the whole fit "
            f"({total} optimizer steps): alpha never moves, and the process is its "
            "start held. Use fewer warm-up steps, or more epochs."
        )
    elif k > 1 and 1 + (total - 1 - w) // k < 2:
        rank_zero_warn(
            f"search.schedule.every_n_steps={k} with a fit of {total} optimizer steps (after "
            f"{w} warm-up steps) updates alpha once, at step {w}: the process is that one "
            f"update held. Use every_n_steps={max(1, (total - w) // 4)} or below, or more "
            "epochs."
        )


def warn_on_gradient_clipping(trainer: pl.Trainer) -> None:
    """Warn when the Trainer clips gradients: the real update is clipped, but the virtual
    step (which follows the optimizer's update exactly) is not, so where the clip bites the
    hypergradient is that of another step than the one taken."""
    clip = trainer.gradient_clip_val
    if clip is None or float(clip) <= 0:
        return
    algorithm = getattr(trainer.gradient_clip_algorithm, "value", None) or "norm"  # the default
    rank_zero_warn(
        f"Trainer(gradient_clip_val={clip}, gradient_clip_algorithm={algorithm!r}) clips the real update's gradient, but the "
        "search's virtual step follows the optimizer's update unclipped: at steps where the "
        "clip bites, the hypergradient is that of a larger step than the one taken. Search "
        "without gradient clipping for the exact virtual step (the replay may clip), or "
        "accept the approximation."
    )


def warn_extreme_settings(module: SearchableModule, settings: SearchSettings) -> None:
    """Warn about an ``alpha_lr`` or ``epsilon`` that makes the search meaningless (see
    `ALPHA_LR_WARN` and `EPSILON_RATIO_WARN`)."""
    if settings.alpha_optimizer == "adam" and settings.alpha_lr >= ALPHA_LR_WARN:
        rank_zero_warn(
            f"alpha_lr={settings.alpha_lr:g} is extreme: Adam moves every pathway logit by up "
            f"to alpha_lr per step, so a few steps drive weights to 0 (or their maximum) and the "
            f"process becomes an on/off switch. Use alpha_lr < {ALPHA_LR_WARN:g} (paper: 0.05)."
        )
    if settings.alpha_optimizer == "sgd" and settings.alpha_lr >= ALPHA_LR_SGD_WARN:
        rank_zero_warn(
            f"alpha_lr={settings.alpha_lr:g} is extreme for the SGD alpha optimizer: one step "
            "moves a logit by alpha_lr times its hypergradient, so the weights snap to a single "
            f"pathway (one-hot). Use alpha_lr < {ALPHA_LR_SGD_WARN:g}, or the Adam optimizer "
            "(paper: Adam, 0.05)."
        )
    if settings.hypergradient == "exact":
        return
    with torch.no_grad():
        norm = math.sqrt(
            sum(float(p.float().pow(2).sum()) for p in module.search_parameters().student.values())
        )
    if settings.epsilon < EPSILON_RATIO_WARN * norm:
        rank_zero_warn(
            f"epsilon={settings.epsilon:g} is tiny against the student's parameter norm "
            f"{norm:.3g} (ratio {settings.epsilon / norm:.1e} < {EPSILON_RATIO_WARN:g}): the "
            "finite-difference hypergradient is float32 rounding noise (or exactly 0, and "
            "alpha never moves). Use epsilon around 0.01 (the default), or hypergradient='exact'."
        )
    if settings.epsilon > EPSILON_RATIO_HIGH_WARN * norm:
        rank_zero_warn(
            f"epsilon={settings.epsilon:g} is large against the student's parameter norm "
            f"{norm:.3g} (ratio {settings.epsilon / norm:.1e} > {EPSILON_RATIO_HIGH_WARN:g}): "
            "the finite differences no longer measure the local derivative (measured: cosine "
            "0.23 with the exact hypergradient at ratio 3.6, exactly 0 at 4e4). Use epsilon "
            "around 0.01 (the default), or hypergradient='exact'."
        )


def weights_collapsed(module: SearchableModule) -> bool:
    """Every pathway weight is below `COLLAPSED_FRACTION` of its weight at the
    search's start (all logits 1)."""
    with torch.no_grad():
        now = module.alpha_weights().abs()
        start = module.alpha_weights(torch.ones_like(module.alpha_logits)).abs()
        return bool((now < COLLAPSED_FRACTION * start).all())


def weights_one_hot(module: SearchableModule) -> bool:
    """One pathway holds more than `ONE_HOT_SHARE` of the total weight (of several)."""
    with torch.no_grad():
        w = module.alpha_weights().abs()
        return bool(w.numel() > 1 and float(w.max()) > ONE_HOT_SHARE * float(w.sum()))


def warn_if_collapsed(module: Any, alpha_lr: float) -> bool:
    """Warn (once a fit, by the caller) when every pathway weight fell below 1/1000 of its
    initial value, or when one pathway holds over 99 % of the weight (one-hot); returns
    whether it warned."""
    if weights_one_hot(module):
        top = int(module.alpha_weights().abs().argmax())
        rank_zero_warn(
            "DistPro search: the weights collapsed onto one pathway "
            f"({module.pathway_names[top]!r} holds over {ONE_HOT_SHARE:.0%} of the weight): the "
            f"process is an on/off switch. If that is not the finding you expect, lower "
            f"alpha_lr (now {alpha_lr:g})."
        )
        return True
    if not weights_collapsed(module):
        return False
    rank_zero_warn(
        "DistPro search: every pathway weight has fallen below 1/1000 of its initial value, so "
        "distillation is switched off. If that is not the finding you expect, lower alpha_lr "
        f"(now {alpha_lr:g})."
    )
    return True


def check_context_used(
    trainer: pl.Trainer, module: Any, ctx: StepContext, outputs: Any = None
) -> bool:
    """At the end of the batch the search ran on (``outputs``: the batch's, as Lightning's
    ``on_train_batch_end`` has them): refuse a manual optimization without exactly one
    optimizer step and a reused gradient the training step did not apply. Returns whether
    the shared training forward was left unused by a step that trained (the caller turns
    sharing off); a batch that ``training_step`` skipped (returned ``None``) only discards
    it."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    skipped = module.automatic_optimization and loss is None
    if not module.automatic_optimization and trainer.global_step != ctx.step + 1:
        raise RuntimeError(
            f"With manual optimization the search needs exactly one optimizer step per "
            f"training batch (it searched alpha for step {ctx.step}, and the batch ended at "
            f"global step {trainer.global_step}): call opt.step() once in training_step, "
            "after self.manual_backward(loss)."
        )
    if ctx.reused is not None and not skipped:
        raise RuntimeError(
            f"{type(module).__name__}.training_step did not apply the reused training "
            "gradient: call self.take_reused_gradient() in it (see DistProModule), or set "
            "reuse_training_gradient=False."
        )
    if ctx.forward is None:
        return False
    if skipped:
        ctx.forward.discard()
        return False
    rank_zero_warn(
        f"{type(module).__name__}.training_step ran its own forward instead of the search's "
        f"training forward (step {ctx.step}), so that step updated the BatchNorm running "
        "statistics twice; sharing is now off. Compute the loss with self.training_loss(batch) "
        "or self.distill(x) to share it, or set share_training_forward=False."
    )
    return True


def check_flag_and_source(enabled: Any, held_out: Any) -> None:
    """``ProcessSearchCallback``'s arguments outside the groups: ``enabled`` a bool (the
    string ``"false"`` is truthy), ``held_out`` ``None``, a method name, a DataLoader or a
    data module."""
    if not isinstance(enabled, bool):
        raise TypeError(
            f"ProcessSearchCallback(enabled=...) takes True or False, got "
            f"{type(enabled).__name__} {enabled!r} (in YAML: search.enabled: false, unquoted)."
        )
    allowed = str | pl.LightningDataModule | torch.utils.data.DataLoader
    if not (held_out is None or isinstance(held_out, allowed)):
        raise TypeError(
            f"ProcessSearchCallback(held_out=...) takes None (the data module's "
            "search_val_dataloader()), the name of a data module method, 'val_dataloaders' "
            "(the validation loader given to trainer.fit), a DataLoader of held-out samples, "
            f"or a LightningDataModule; got {type(held_out).__name__} {held_out!r}."
        )
