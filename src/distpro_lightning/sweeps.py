"""From a sweep to the retrain: each trial writes its process into its own log directory
(``--search.save_path '{log_dir}/process.json'``) with its final held-out loss in the
provenance (``search_val_loss``, the epoch mean of ``search/val_loss``);
``distpro sweep-best ROOT -- FIT ARGS`` finds every process file under ``ROOT``, names the
best and retrains it (``distpro fit FIT ARGS SEARCH SPACE --replay.process BEST``, where
the search-space arguments, `search_space_args`, give the module the transforms,
normalisation and prune threshold the best trial searched with)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import DistillationProcess, ProcessFileError

#: The placeholder of a run's log directory in ``search.save_path`` (``distpro fit``).
LOG_DIR_PLACEHOLDER = "{log_dir}"


def run_log_dir(trainer: Any) -> str:
    """The directory of this run's logs: the logger's versioned ``log_dir`` (CSV,
    TensorBoard), ``save_dir/name/version`` for the others (W&B: the run id), where
    ``ModelCheckpoint`` puts its files by default; ``default_root_dir`` without a logger."""
    logger = trainer.logger
    if logger is None:
        return str(trainer.default_root_dir)
    log_dir = getattr(logger, "log_dir", None)
    if log_dir is not None:
        return str(log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return os.path.join(str(save_dir), str(logger.name), version)


def with_log_dir(path: str | None, trainer: Any) -> str | None:
    """``path`` with `LOG_DIR_PLACEHOLDER` replaced by `run_log_dir`."""
    if path is None or LOG_DIR_PLACEHOLDER not in str(path):
        return path
    return str(path).replace(LOG_DIR_PLACEHOLDER, run_log_dir(trainer))


@dataclass(frozen=True)
class Trial:
    """A process file of a sweep and its score (``None``: the file records none)."""

    path: Path
    score: float | None
    steps: int


def find_trials(root: str | os.PathLike[str], pattern: str = "process.json") -> list[Trial]:
    """Every readable process file named ``pattern`` under ``root``, best (lowest
    ``search_val_loss``) first, unscored ones last."""
    trials = []
    for path in sorted(Path(root).expanduser().rglob(pattern)):
        try:
            process = DistillationProcess.load(path)
        except (ProcessFileError, OSError):
            continue
        score = process.provenance.get("search_val_loss")
        ok = isinstance(score, int | float) and math.isfinite(score)
        trials.append(Trial(path, float(score) if ok else None, len(process)))
    return sorted(trials, key=lambda t: (t.score is None, t.score or 0.0, str(t.path)))


def search_space_args(process: DistillationProcess) -> list[str]:
    """The ``distpro fit`` arguments that give a ``DistProModule`` the search space a process
    was searched in (a sweep varies them per trial): transforms, normalisation and its
    bias, prune threshold."""
    tau = process.prune_threshold
    return [
        f"--model.init_args.transforms=[{', '.join(process.transform_kinds)}]",
        f"--model.init_args.normalization={process.normalization['name']}",
        f"--model.init_args.normalization_bias={process.normalization['bias']}",
        f"--model.init_args.prune_threshold={'null' if tau is None else tau}",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distpro sweep-best",
        description="Find the best process of a sweep (lowest search_val_loss) and retrain it: "
        "distpro sweep-best ROOT -- --config retrain.yaml [more fit arguments].",
    )
    parser.add_argument("root", help="folder holding the trials' log directories")
    parser.add_argument("--pattern", default="process.json", help="process file name")
    return parser


def sweep_best_main(argv: Sequence[str]) -> int:
    """``distpro sweep-best ROOT [--pattern NAME] [-- FIT ARGS]``: list the trials, print the
    best, and with ``FIT ARGS`` run ``distpro fit FIT ARGS --replay.process BEST``."""
    argv = list(argv)
    fit_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ns = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    trials = find_trials(ns.root, ns.pattern)
    for t in trials:
        score = "no score" if t.score is None else f"search_val_loss {t.score:.5f}"
        print(f"{score:>24}  {t.steps:>6} steps  {t.path}")
    scored = [t for t in trials if t.score is not None]
    if not scored:
        raise FileNotFoundError(
            f"No scored process file named {ns.pattern!r} under {ns.root!r}: each trial must "
            "write its own (--search.save_path '{log_dir}/process.json') and finish its fit."
        )
    best = scored[0]
    print(f"best: {best.path} (search_val_loss {best.score:.5f})")
    if fit_args:
        from .cli import cli_main

        args = [*fit_args, *search_space_args(DistillationProcess.load(best.path))]
        args += ["--replay.process", str(best.path)]
        print(f"retraining: distpro fit {' '.join(args)}")
        cli_main(["fit", *args])
    return 0
