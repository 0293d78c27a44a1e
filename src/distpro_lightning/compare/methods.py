"""Each method of a comparison as ``(LightningModule, callbacks)``, built from the pair's
module (its student, teacher, search space and optimizer) with the library's own builders:
`ClassifierModule`, `DistProModule` (Hinton KD: `baselines.recipes.HINTON_KD`, the logits
pathway alone), `ReviewKDModule`, and `ProcessScheduleCallback` for equal weights and the
replays (`baselines.recipes.REPLAY_MODES`). The fixed combination holds the space's
weights constant (`FixedWeights`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from distpro_lightning.baselines.recipes import HINTON_KD, REPLAY_MODES
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.compare.pair import teacher_of
from distpro_lightning.modules.classifier import ClassifierModule
from distpro_lightning.modules.config import DistillationConfig
from distpro_lightning.modules.distpro import DistProModule
from distpro_lightning.pathways.heads import KD_PATHWAY_NAME
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME
from distpro_lightning.replay import ProcessScheduleCallback


@dataclass(frozen=True)
class MethodInputs:
    """What a method's run is built from: the pair's module (fresh, the seed's student),
    the grid point, the process it replays (a file, or ``None``), the run's epochs and, for
    ``transfer``, the map of pathway names."""

    template: DistProModule
    point: dict[str, float]
    process: str | None = None
    epochs: int = 1
    pathway_map: dict[str, str] | str | None = None


class FixedWeights(Callback):
    """Hold the module's pathway weights at ``shares`` (one per pathway, summing to 1) times
    its weight scale for the whole fit: the ``l1`` normalisation of constant logits (the
    smallest at 1.0, so no pathway falls under a pruning threshold below 1)."""

    def __init__(self, shares: list[float]) -> None:
        self.shares = torch.tensor(shares, dtype=torch.float32)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.normalization = "l1"
        with torch.no_grad():
            pl_module.alpha_logits.copy_(self.shares / self.shares.min())


def fixed_shares(names: list[str], feature_share: float) -> list[float]:
    """``feature_share`` split equally over the feature pathways, the rest equally over the
    Hinton KD and ReviewKD pathways of the space."""
    special = [n for n in names if n in (KD_PATHWAY_NAME, REVIEW_PATHWAY_NAME)]
    features = len(names) - len(special)
    if not special or not features or not 0.0 < feature_share < 1.0:
        raise ValueError(
            f"compare: the fixed combination splits a share f in (0, 1) (got {feature_share}) "
            "between the feature pathways and the response_kd / review_kd pathways, but the "
            f"space has {features} feature and {len(special)} such pathway(s): set "
            "distillation.response_kd and/or review_kd (the recommended space), or drop fixed."
        )
    return [
        (1 - feature_share) / len(special) if n in special else feature_share / features
        for n in names
    ]


def distpro(inputs: MethodInputs, **changes: Any) -> DistProModule:
    """A `DistProModule` of the pair in its space, with ``changes`` to its distillation."""
    t = inputs.template
    return DistProModule(
        student=t.student,
        teacher=teacher_of(t),
        num_classes=t.num_classes,
        distillation=replace(t.distillation_config, **changes),
        optimizer=t.optimizer_config,
    )


def build(method: str, inputs: MethodInputs) -> tuple[LightningModule, list[Callback]]:
    """``(module, callbacks)`` of ``method`` (a name of `settings.METHODS`)."""
    t, p = inputs.template, inputs.point
    if method == "student":
        return ClassifierModule(t.student, t.num_classes, optimizer=t.optimizer_config), []
    if method == "hinton_kd":
        kd = dict(HINTON_KD, kd_weight=p["w"], kd_temperature=p["T"])
        kd["transforms"] = DistillationConfig().transforms  # unused without feature pathways
        return distpro(inputs, **kd), []
    if method == "reviewkd":
        space = t.distillation_config
        module = ReviewKDModule(
            t.student, teacher_of(t), t.num_classes,
            student_taps=space.student_taps, teacher_taps=space.teacher_taps,
            input_shape=list(space.input_shape), review_weight=p["w"],
            warmup_epochs=p["warm"] * inputs.epochs, optimizer=t.optimizer_config,
        )  # fmt: skip
        return module, []
    if method == "equal":
        module = distpro(inputs, kd_weight=p["w"])
        return module, [ProcessScheduleCallback(mode=REPLAY_MODES["equal"], plot=False)]
    if method == "fixed":
        module = distpro(inputs, kd_weight=p["w"])
        return module, [FixedWeights(fixed_shares(list(module.pathway_names), p["f"]))]
    modes = {"alpha_T": REPLAY_MODES["alpha_T"], "distpro_cheap": REPLAY_MODES["distpro"]}
    modes |= {"distpro": REPLAY_MODES["distpro"], "transfer": REPLAY_MODES["distpro"]}
    if method not in modes or inputs.process is None:
        raise ValueError(f"compare: no builder for {method!r} with process {inputs.process!r}")
    replay = ProcessScheduleCallback(
        inputs.process, mode=modes[method], pathway_map=inputs.pathway_map, plot=False
    )
    return distpro(inputs), [replay]
