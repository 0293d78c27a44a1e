"""The cost of a comparison before it starts: the runs it plans x the step cost of each
method, measured over a short warm-up through ``Trainer.fit`` (the first step, which
compiles and allocates, is not counted), and the cut that fits a wall-time budget."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from distpro_lightning.compare.methods import MethodInputs, build
from distpro_lightning.compare.pair import Pair
from distpro_lightning.compare.plan import Record, search_key
from distpro_lightning.compare.runs import evaluate, run_trainer
from distpro_lightning.compare.settings import REPLAYS, WIDEN, CompareSettings
from distpro_lightning.search.callback import ProcessSearchCallback

SEARCH = "search"  # the step-cost key of a search step (alpha updated at that step)


class StepTimer(Callback):
    """Seconds per training step, and the steps of one epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.per_epoch = 0
        self._start = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.per_epoch = int(trainer.num_training_batches)

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._start)

    def step_s(self) -> float:
        return statistics.median(self.times[1:] or self.times)


def warm_up(
    pair: Pair, settings: CompareSettings, method: str, folder: Path
) -> tuple[StepTimer, Any, Any]:
    """A few steps of ``method`` (a replay of a search: the same module at equal weights;
    ``search``: a search step) on the first seed, timed; the timer, the module and the
    data module."""
    timer, steps = StepTimer(), settings.budget.warmup_steps
    seed = settings.seeds[0]
    if method == SEARCH:
        module: Any = pair.template(seed)
        data = pair.data(settings.search_seeds[0], True)
        callbacks: list[Callback] = [
            ProcessSearchCallback(output={"save_path": None, "plot": False}, enabled=True)
        ]
    else:
        stand_in = "equal" if method in REPLAYS else method  # no process searched yet
        point = {**settings.grids.get(stand_in, [{"w": 1.0}])[0]}
        inputs = MethodInputs(
            pair.template(seed), point, settings.transfer_process, pair.max_epochs,
            settings.pathway_map,
        )  # fmt: skip
        module, callbacks = build(stand_in, inputs)  # a transfer that does not fit: refused
        data = pair.data(seed, False)
    trainer = run_trainer(pair, folder, [*callbacks, timer], max_steps=steps, max_epochs=-1)
    trainer.fit(module, datamodule=data)
    return timer, module, data


def measure(pair: Pair, settings: CompareSettings, folder: Path) -> dict[str, Any]:
    """Step costs of every method (and of a search step, when a recipe is replayed), the
    steps of a run and the seconds of evaluating its final weights, which the first
    warm-up does: a data module without a validation or test split is refused here,
    before any run."""
    kinds = list(settings.methods) + (
        [SEARCH] if any(m in REPLAYS for m in settings.methods) else []
    )
    step_s: dict[str, float] = {}
    for kind in kinds:
        timer, module, data = warm_up(pair, settings, kind, folder)
        step_s[kind] = timer.step_s()
        if kind == kinds[0]:  # a run's module and data module (a search comes last)
            per_epoch, start = timer.per_epoch, time.perf_counter()
            evaluate(pair, module, data)
            eval_s = time.perf_counter() - start
    run_steps = per_epoch * pair.max_epochs
    cap = pair.trainer.get("max_steps", -1)
    if isinstance(cap, int) and cap > 0:
        run_steps = min(run_steps, cap)
    return {"step_s": step_s, "run_steps": run_steps, "eval_s": eval_s}


def runs_of(settings: CompareSettings) -> dict[str, int]:
    """The runs each method makes before any widening (a replay: one per seed and search)."""
    others = len(settings.seeds) - len(settings.grid_seeds)
    return {
        m: len(settings.seeds) * len(settings.search_seeds)
        if m in REPLAYS
        else len(settings.seeds)
        if len(settings.grids[m]) == 1
        else len(settings.grids[m]) * len(settings.grid_seeds) + others
        for m in settings.methods
    }


def widening_runs(settings: CompareSettings) -> int:
    """The most runs widening can add: per round and widened parameter on an edge, the
    points beyond it (3 with two parameters: two edges and the corner), on the grid seeds."""
    most = sum(
        (2 ** len(WIDEN.get(m, ())) - 1) * settings.widen_rounds
        for m in settings.methods
        if len(settings.grids[m]) > 1
    )
    return most * len(settings.grid_seeds)


@dataclass(frozen=True)
class Estimate:
    """Runs and searches, their summed seconds (``total_s``) and what is left (``left_s``)."""

    runs: dict[str, int]
    searches: dict[str, int]
    total_s: float
    left_s: float
    widening: int

    def text(self) -> str:
        runs = ", ".join(f"{m} {n}" for m, n in self.runs.items())
        return (
            f"{sum(self.runs.values())} runs ({runs}) and {sum(self.searches.values())} "
            f"search(es): about {duration(self.total_s)} in all, {duration(self.left_s)} "
            f"left; grid widening can add up to {self.widening} runs."
        )


def duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def search_s(settings: CompareSettings, recipe: str, cost: dict[str, Any]) -> float:
    """A search's seconds: its steps, every ``every_n_steps``-th a search step, the others
    plain steps of the space (equal weights' cost)."""
    spec = settings.recipes[recipe]
    steps = max(1, round(spec.epoch_fraction * cost["run_steps"]))
    plain = cost["step_s"].get("equal", cost["step_s"][SEARCH] / 3)
    per = (cost["step_s"][SEARCH] + (spec.every_n_steps - 1) * plain) / spec.every_n_steps
    return steps * per


def estimate(settings: CompareSettings, cost: dict[str, Any], records: list[Record]) -> Estimate:
    """The comparison's cost from the measured ``cost`` (`measure`); ``left_s`` leaves out
    what ``records`` hold."""
    runs = runs_of(settings)
    n_searches = len(settings.search_seeds)
    searches = {REPLAYS[m]: n_searches for m in settings.methods if m in REPLAYS}
    run_s = {m: cost["step_s"][m] * cost["run_steps"] + cost.get("eval_s", 0.0) for m in runs}
    seconds = {m: n * run_s[m] for m, n in runs.items()}
    seconds |= {
        search_key(r, x): search_s(settings, r, cost)
        for r in searches
        for x in settings.search_seeds
    }
    done = [r for r in records if r["kind"] == "run"]
    spent = sum(run_s.get(r["method"], 0.0) for r in done)
    spent += sum(seconds.get(r["key"], 0.0) for r in records if r["kind"] == "search")
    total = sum(seconds.values())
    return Estimate(runs, searches, total, max(0.0, total - spent), widening_runs(settings))


def fit_budget(
    settings: CompareSettings, cost: dict[str, Any], records: list[Record]
) -> tuple[CompareSettings, list[str]]:
    """``settings`` cut to ``settings.budget.wall_s`` by ``budget.cut``, and what was cut
    (nothing when it fits or no budget is set). Refused when even the cut does not fit."""
    budget, cuts = settings.budget, []
    if budget.wall_s is None or budget.cut == "none":
        return settings, cuts
    while estimate(settings, cost, records).left_s > budget.wall_s:
        if budget.cut == "seeds" and len(settings.seeds) > max(
            budget.min_seeds, len(settings.grid_seeds)
        ):
            cuts.append(f"seed {settings.seeds[-1]}")
            settings = dataclasses.replace(settings, seeds=settings.seeds[:-1])
        elif budget.cut == "grids" and settings.widen_rounds > 0:
            cuts.append("grid widening")
            settings = dataclasses.replace(settings, widen_rounds=0)
        elif budget.cut == "grids" and len(settings.grid_seeds) > 1:
            first, rest = settings.grid_seeds[0], list(settings.grid_seeds[1:])
            cuts.append(f"grid seeds {rest} (grids on seed {first} only)")
            settings = dataclasses.replace(settings, grid_seeds=settings.grid_seeds[:1])
        else:
            left = estimate(settings, cost, records).left_s
            raise ValueError(
                f"compare.budget: {left / 60:.1f} min are left after cutting "
                f"{', '.join(cuts) or 'nothing'} (cut: {budget.cut}), over the budget of "
                f"{budget.wall_s / 60:.1f} min: raise budget.wall_s, use the other cut, or "
                "give fewer methods, seeds or grid points."
            )
    return settings, cuts
