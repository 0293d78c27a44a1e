"""One task of a comparison, run through ``Trainer.fit``: a shared search (the process a
DistPro recipe replays on every seed) or one method's run on a paired seed, evaluated on
validation and test with its final weights (no checkpoint is selected).

Pairing: a run of seed ``s`` builds the pair's module under ``seed_everything(s)`` (the
same initial student for every method), gets the data module of ``s`` (the same subset,
where it takes a seed) and reseeds the global generator at the start of every epoch
(`Pairing`: the same batch order for every method). `Pairing` also records fingerprints
of the initial student and of the first batches, which the runner compares across the
methods of a seed."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from distpro_lightning.compare.methods import MethodInputs, build
from distpro_lightning.compare.pair import Pair
from distpro_lightning.compare.plan import Task
from distpro_lightning.compare.settings import REPLAYS, CompareSettings
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.search.callback import ProcessSearchCallback

#: Trainer arguments the comparison sets itself for every run.
OWN_TRAINER_KEYS = ("logger", "callbacks", "enable_checkpointing", "default_root_dir")
#: Trainer arguments the evaluation of the final weights keeps from the user's.
EVAL_TRAINER_KEYS = ("accelerator", "devices", "precision", "limit_val_batches")
EVAL_TRAINER_KEYS += ("limit_test_batches",)


@contextlib.contextmanager
def lightning_info_off() -> Iterator[None]:
    """Lightning's info lines (devices found, tips, batch limits) off while the block runs,
    its warnings kept: a comparison makes dozens of Trainers, and its own progress lines
    are what a user reads. The levels are restored after."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def digest(value: Any, h: Any = None) -> Any:
    """A SHA-256 over the tensors in ``value`` (nested tuples, lists, dicts)."""
    h = h or hashlib.sha256()
    if isinstance(value, torch.Tensor):
        h.update(value.detach().cpu().contiguous().view(-1).numpy().tobytes())
    elif isinstance(value, Mapping):
        for k in sorted(value):
            digest(value[k], h)
    elif isinstance(value, tuple | list):
        for v in value:
            digest(v, h)
    return h


def student_net(module: LightningModule) -> torch.nn.Module:
    return module.model if hasattr(module, "model") else module.student


class Pairing(Callback):
    """Reseed the global generator at every epoch start from the seed and the epoch (the
    same shuffles for every method of a seed) and fingerprint the initial student and the
    first ``batches`` training batches."""

    def __init__(self, seed: int, batches: int = 2) -> None:
        self.seed, self.batches = seed, batches
        self.init = self.order = ""
        self._order = hashlib.sha256()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.init = digest(student_net(pl_module).state_dict()).hexdigest()[:16]

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.manual_seed(1_000_003 * (self.seed + 1) + trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 0 and batch_idx < self.batches:
            digest(batch, self._order)
            self.order = self._order.hexdigest()[:16]

    def record(self) -> dict[str, str]:
        return {"init": self.init, "order": self.order}


def run_trainer(pair: Pair, folder: Path, callbacks: list[Callback], **over: Any) -> Trainer:
    """The trainer of one fit: the user's settings, no logger, no checkpoints, validation
    only after the fit (on the final weights)."""
    kwargs = {k: v for k, v in pair.trainer.items() if k not in OWN_TRAINER_KEYS}
    kwargs.update(logger=False, enable_checkpointing=False, default_root_dir=str(folder))
    kwargs.update(enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    kwargs.update(over)
    return Trainer(**kwargs, callbacks=callbacks)


def evaluate(pair: Pair, module: LightningModule, data: Any) -> dict[str, float]:
    """Validation and test top-1 of ``module``'s final weights."""
    kwargs = {k: pair.trainer[k] for k in EVAL_TRAINER_KEYS if k in pair.trainer}
    if not isinstance(kwargs.get("devices"), list | str) or kwargs["devices"] == "auto":
        kwargs["devices"] = 1  # the final weights are evaluated on one device, no launcher
    kwargs.update(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = Trainer(**kwargs)
    val = trainer.validate(module, datamodule=data, verbose=False)
    if not val or "val/top1" not in val[0]:
        raise ValueError(
            "compare: the data module gives no validation batches, and every grid point is "
            "chosen on validation: give it a validation split (a DistPro data module: "
            "data.init_args.val_fraction, e.g. 0.1)."
        )
    test = trainer.test(module, datamodule=data, verbose=False)
    return {"val_top1": float(val[0]["val/top1"]), "top1": float(test[0]["test/top1"])}


def process_path(folder: Path, recipe: str, search_seed: int | None) -> Path:
    """``process_full_s100.json``: where ``recipe``'s search of ``search_seed`` is written."""
    return folder / f"process_{recipe}_s{search_seed}.json"


def search_epochs(pair: Pair, fraction: float) -> dict[str, int]:
    """``max_epochs`` (and ``max_steps`` where the user caps the runs) of a search over
    ``fraction`` of a run."""
    out = {"max_epochs": max(1, round(fraction * pair.max_epochs))}
    steps = pair.trainer.get("max_steps", -1)
    if isinstance(steps, int) and steps > 0:
        out["max_steps"] = max(1, round(fraction * steps))
    return out


def run_search(pair: Pair, settings: CompareSettings, task: Task, folder: Path) -> dict:
    """The shared search ``task`` (its recipe, on the data module of its search seed); its
    process is written beside the results."""
    recipe, seed = task.method, int(task.search or 0)
    spec, path = settings.recipes[recipe], process_path(folder, recipe, task.search)
    module = pair.template(seed)
    data = pair.data(seed, True)
    search = ProcessSearchCallback(
        alpha={"lr": spec.alpha_lr},
        schedule={"seed": seed, "every_n_steps": spec.every_n_steps, "proxy": spec.proxy},
        output={"save_path": str(path), "plot": False, "overwrite": True},
    )
    trainer = run_trainer(pair, folder, [search], **search_epochs(pair, spec.epoch_fraction))
    seed_everything(seed, workers=True, verbose=False)
    trainer.fit(module, datamodule=data)
    process = DistillationProcess.load(path)
    return {
        "method": recipe,
        "search_seed": seed,
        "process": path.name,
        "fingerprint": process.fingerprint(),
        "rows": len(process),
        "steps": trainer.global_step,
    }


def replayed(settings: CompareSettings, task: Task, folder: Path) -> str | None:
    """The process file ``task`` replays (its search's, or the transferred one), if any."""
    if task.method == "transfer":
        return settings.transfer_process
    if task.method not in REPLAYS:
        return None
    return str(process_path(folder, REPLAYS[task.method], task.search))


def run_method(
    pair: Pair, settings: CompareSettings, task: Task, point: dict[str, float], folder: Path
) -> dict:
    """One method's run on ``task.seed`` at ``point``, paired (see the module docs)."""
    process = replayed(settings, task, folder)
    inputs = MethodInputs(
        pair.template(task.seed), point, process, pair.max_epochs, settings.pathway_map
    )
    module, callbacks = build(task.method, inputs)
    data = pair.data(task.seed, False)
    pairing = Pairing(task.seed)
    trainer = run_trainer(pair, folder, [*callbacks, pairing])
    seed_everything(task.seed, workers=True, verbose=False)
    trainer.fit(module, datamodule=data)
    record = {"method": task.method, "params": point, **evaluate(pair, module, data)}
    record.update(steps=trainer.global_step, pairing=pairing.record())
    if process is not None:
        record["process"] = DistillationProcess.load(process).fingerprint()
    if task.search is not None:
        record["search_seed"] = task.search
    return record


def execute(
    pair: Pair, settings: CompareSettings, task: Task, point: dict[str, float], folder: Path
) -> dict[str, Any]:
    """Run ``task`` in this process; its JSON-able record."""
    start = time.perf_counter()
    if task.kind == "search":
        record = run_search(pair, settings, task, folder)
    else:
        record = run_method(pair, settings, task, point, folder)
    record.update(kind=task.kind, key=task.key, seed=task.seed)
    record["wall_s"] = time.perf_counter() - start
    return record
