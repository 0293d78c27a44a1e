"""From a sweep to the retrain: each trial writes its process into its own log directory
(``--search.output.save_path '{log_dir}/process.json'``) with its final held-out loss in the
provenance (``search_val_loss``, the epoch mean of ``search/val_loss``);
``distpro sweep-best ROOT -- FIT ARGS`` finds every process file under ``ROOT``, names the
best and retrains it (``distpro fit FIT ARGS SEARCH SPACE --replay.process BEST``, where
the search-space arguments, `search_space_args`, give the module the transforms,
normalisation and prune threshold the best trial searched with)."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distpro_lightning.files import atomic_write_text
from distpro_lightning.pathways.heads import KD_PATHWAY_NAME
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME
from distpro_lightning.process.core import DistillationProcess, ProcessFileError
from distpro_lightning.search.paths import LOG_DIR_PLACEHOLDER


@dataclass(frozen=True)
class Trial:
    """A process file of a sweep and its score (``None``: the file records none), or why
    it cannot be ranked (``problem``: a damaged file, non-finite weights or score)."""

    path: Path
    score: float | None
    steps: int
    problem: str | None = None
    settings: str = ""


def transform_kinds(process: DistillationProcess) -> list[str]:
    """The transform kinds a process was searched with: as its file records them, else (a
    file with ``transform_kinds: null``) the kinds its feature pathways' names end in."""
    if process.transform_kinds is not None:
        return list(process.transform_kinds)
    special = (KD_PATHWAY_NAME, REVIEW_PATHWAY_NAME)
    named = [n.rsplit(":", 1)[-1] for n in process.pathway_names if n not in special]
    return list(dict.fromkeys(named))


def trial_settings(process: DistillationProcess) -> str:
    """A trial's settings as its process file records them, one line: what a sweep varies
    (alpha lr, hypergradient, sparse search, search space, normalisation, threshold, seed)."""
    prov = process.provenance
    names = set(process.pathway_names)
    every = prov.get("run_settings", {}).get("search_every_n_steps", 1)
    parts = {
        "alpha.lr": prov.get("alpha_lr"),
        "hypergradient": prov.get("hypergradient"),
        "every_n_steps": every,
        "transforms": "[" + ", ".join(transform_kinds(process)) + "]",
        "response_kd": KD_PATHWAY_NAME in names,
        "review_kd": REVIEW_PATHWAY_NAME in names,
        "normalization": process.normalization["name"],
        "prune_threshold": process.prune_threshold,
        "seed": prov.get("seed"),
    }
    return " ".join(f"{k}={v}" for k, v in parts.items())


def find_trials(root: str | os.PathLike[str], pattern: str = "process.json") -> list[Trial]:
    """Every readable process file named ``pattern`` under ``root``, best (lowest
    ``search_val_loss``) first, unscored ones last."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"distpro sweep-best: {str(root)!r} is not a folder; give the folder that holds the "
            "trials' log directories (e.g. runs/wandb)."
        )
    trials = []
    for path in sorted(folder.rglob(pattern)):
        try:
            process = DistillationProcess.load(path)
        except (ProcessFileError, OSError) as exc:
            trials.append(Trial(path, None, 0, f"damaged: {exc}"))
            continue
        score = process.provenance.get("search_val_loss")
        problem = None
        if not bool(torch.isfinite(process.logits).all()):
            problem = "non-finite logits"
        elif isinstance(score, int | float) and not math.isfinite(score):
            problem = f"non-finite held-out loss ({score})"
        ok = problem is None and isinstance(score, int | float)
        settings = trial_settings(process)
        trials.append(Trial(path, float(score) if ok else None, len(process), problem, settings))
    return sorted(trials, key=lambda t: (t.score is None, t.score or 0.0, str(t.path)))


def search_space_args(process: DistillationProcess) -> list[str]:
    """The ``distpro fit`` arguments that give a ``DistProModule`` the search space a process
    was searched in (a sweep varies them per trial): transforms, the KD and review
    pathways, normalisation and its bias, prune threshold."""
    tau = process.prune_threshold
    names = set(process.pathway_names)
    kd, review = KD_PATHWAY_NAME in names, REVIEW_PATHWAY_NAME in names
    return [
        f"--model.init_args.distillation.response_kd={str(kd).lower()}",
        f"--model.init_args.distillation.review_kd={str(review).lower()}",
        f"--model.init_args.distillation.transforms=[{', '.join(transform_kinds(process))}]",
        f"--model.init_args.distillation.normalization={process.normalization['name']}",
        f"--model.init_args.distillation.normalization_bias={process.normalization['bias']}",
        f"--model.init_args.distillation.prune_threshold={'null' if tau is None else tau}",
    ]


def refuse_set_keys(command: str, fit_args: Sequence[str], ours: Sequence[str], why: str) -> None:
    """Refuse fit arguments that name a key ``command`` sets itself (``ours``: its
    ``--key=value`` arguments): the later one, ours, would silently win."""
    keys = {a.split("=", 1)[0] for a in ours}
    given = sorted({a.split("=", 1)[0] for a in fit_args if a.split("=", 1)[0] in keys})
    if given:
        raise ValueError(
            f"distpro {command} sets {', '.join(given)} itself ({why}); drop "
            f"{'it' if len(given) == 1 else 'them'} from the fit arguments after --."
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distpro sweep-best",
        description="Find the best process of a sweep (lowest search_val_loss) and retrain it: "
        "distpro sweep-best ROOT -- --config retrain.yaml [more fit arguments].",
    )
    parser.add_argument("root", help="folder holding the trials' log directories")
    parser.add_argument("--pattern", default="process.json", help="process file name")
    return parser


def sweep_best_main(argv: Sequence[str], fit: Callable[[list[str]], Any]) -> int:
    """``distpro sweep-best ROOT [--pattern NAME] [-- FIT ARGS]``: list the trials, print the
    best, and with ``FIT ARGS`` run ``fit(["fit", *FIT ARGS, "--replay.process", BEST])``
    (the ``distpro`` dispatcher passes its LightningCLI entry)."""
    argv = list(argv)
    fit_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ns = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if fit_args:
        refuse_no_model("sweep-best", fit_args)
    trials = find_trials(ns.root, ns.pattern)
    say_mixed_sweeps(Path(ns.root).expanduser())
    for t in trials:
        score = "no score" if t.score is None else f"search_val_loss {t.score:.5f}"
        if t.problem:
            score = "NOT RANKED"
        print(
            f"{score:>24}  {t.steps:>6} steps  {t.path}" + (f"  ({t.problem})" if t.problem else "")
        )
        if t.settings:
            print(f"{'':>24}  {t.settings}")
    bad = [t for t in trials if t.problem]
    if bad:
        print(
            f"warning: {len(bad)} trial(s) not ranked (listed above with the reason); the best "
            "is chosen among the others."
        )
    scored = [t for t in trials if t.score is not None]
    if not scored:
        raise FileNotFoundError(
            f"No scored process file named {ns.pattern!r} under {ns.root!r}: each trial must "
            "write its own (--search.output.save_path '{log_dir}/process.json') and finish its fit."
        )
    best = scored[0]
    print(f"best: {best.path} (search_val_loss {best.score:.5f})")
    say_ties(scored)
    if fit_args:
        ours = [*search_space_args(DistillationProcess.load(best.path))]
        ours += [f"--replay.process={best.path}"]
        refuse_set_keys(
            "sweep-best", fit_args, ours,
            "the best trial's search space and process; to retrain with others, run distpro "
            f"fit --replay.process {best.path} with your own settings",
        )  # fmt: skip
        args = [*fit_args, *ours]
        print(f"retraining: distpro fit {' '.join(args)}")
        fit(["fit", *args])
    return 0


def split_values(values: str) -> list[str]:
    """``V1,V2,...`` split at the commas outside brackets and braces: a list value such as
    ``[conv_bn,attn2]`` stays one value."""
    out, depth, current = [], 0, ""
    for char in values:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    return [v.strip() for v in [*out, current]]


def say_ties(scored: Sequence[Trial]) -> None:
    """Say when several trials share the best score as printed (5 decimals), and how the
    best was chosen among them: the lowest exact score, then the path order."""
    best = scored[0]
    assert best.score is not None
    tied = [t for t in scored if t.score is not None and round(t.score, 5) == round(best.score, 5)]
    if len(tied) < 2:
        return
    exact = sum(1 for t in tied if t.score == best.score)
    print(
        f"tie: {len(tied)} trials share the best search_val_loss {best.score:.5f} "
        f"({exact} of them exactly); the tie-break takes the lowest exact value, then the "
        f"first path in alphabetical order: {best.path}. The tied trials differ in the "
        "settings listed above; to retrain another, run distpro fit --replay.process FILE."
    )
    for t in tied[1:]:
        print(f"  also tied: {t.path}")


def grid_trials(params: Sequence[str]) -> list[list[str]]:
    """The argument lists of every combination of ``KEY=V1,V2,...`` parameters, e.g.
    ``["search.alpha.lr=0.01,0.1"]`` -> ``[["--search.alpha.lr=0.01"], [...0.1]]``; a list
    value is written in brackets (``transforms=[conv_bn,attn2],[conv_bn]``). A key given
    twice is refused (the later value would silently win in every trial)."""
    import itertools

    axes, keys = [], []
    for spec in params:
        key, sep, values = spec.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values:
            raise ValueError(
                f"--param {spec!r} is not KEY=V1,V2,...; e.g. --param search.alpha.lr=0.01,0.1"
            )
        if key in keys:
            raise ValueError(
                f"--param {key} is given twice; give all its values in one: --param "
                f"{key}=V1,V2,... (each trial takes one value of each key)."
            )
        keys.append(key)
        axes.append([f"--{key}={v}" for v in split_values(values)])
    return [list(combo) for combo in itertools.product(*axes)]


def refuse_no_model(command: str, fit_args: Sequence[str]) -> None:
    """Refuse fit arguments that give no model (no ``--config`` and no ``--model``): the
    fit would fail on the first required key, deep inside jsonargparse."""
    if not any(a.split("=", 1)[0] in ("--config", "-c", "--model") for a in fit_args):
        raise ValueError(
            f"distpro {command}: the fit arguments after -- give no model; start them with "
            "--config FILE.yaml (e.g. -- --config examples/fashion_mnist/retrain.yaml)."
        )


#: The file in a sweep-grid folder that records the sweeps run into it.
SWEEP_RECORD = "sweep.json"


def record_sweep(root: Path, sweep: dict[str, Any]) -> None:
    """Add ``sweep`` (its parameters and fit arguments) to ``root``'s `SWEEP_RECORD`, once."""
    path = root / SWEEP_RECORD
    known = json.loads(path.read_text()).get("sweeps", []) if path.is_file() else []
    if sweep not in known:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"sweeps": [*known, sweep]}, indent=1) + "\n")


def sweeps_under(root: Path) -> list[dict[str, Any]]:
    """Every sweep recorded under ``root`` (`record_sweep`), with the folder it ran in."""
    found = []
    for path in sorted(root.rglob(SWEEP_RECORD)):
        try:
            sweeps = json.loads(path.read_text()).get("sweeps", [])
        except (ValueError, AttributeError, OSError):
            continue
        found += [{**s, "folder": str(path.parent)} for s in sweeps if isinstance(s, dict)]
    return found


def say_mixed_sweeps(root: Path) -> None:
    """Say so when the trials under ``root`` come from more than one sweep."""
    sweeps = sweeps_under(root)
    if len(sweeps) > 1:
        listed = "; ".join(
            f"{s['folder']}: --param {' --param '.join(s.get('params', []))}" for s in sweeps
        )
        print(
            f"warning: {root} holds the trials of {len(sweeps)} sweeps, ranked together here "
            f"({listed}). Give one sweep's folder to rank it alone, and run each new grid "
            "into a folder of its own."
        )


def _trial_args(folder: Path) -> list[str]:
    """The fit arguments sweep-grid sets for the trial in ``folder``: its root, CSV log and
    process file."""
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(folder)},
    }
    return [
        f"--trainer.default_root_dir={folder}", f"--trainer.logger={json.dumps(logger)}",
        f"--search.output.save_path={LOG_DIR_PLACEHOLDER}/process.json",
    ]  # fmt: skip


def sweep_grid_main(argv: Sequence[str], fit: Callable[[list[str]], Any]) -> int:
    """``distpro sweep-grid ROOT --param KEY=V1,V2 [--param ...] -- FIT ARGS``: an offline
    sweep over the search settings (no W&B account needed). Each combination is one
    ``fit(["fit", *FIT ARGS, *its values, ...])`` trial in ``ROOT/trial_<i>``, logging with
    a CSV logger there and writing its process (with its held-out loss, the score) to its
    log directory; ``distpro sweep-best ROOT -- RETRAIN ARGS`` then retrains the best."""
    argv = list(argv)
    fit_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="distpro sweep-grid", description=sweep_grid_main.__doc__)
    parser.add_argument("root", help="folder for the trials")
    parser.add_argument("--param", action="append", default=[], help="KEY=V1,V2,... (repeat)")
    ns = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not ns.param or not fit_args:
        raise ValueError(
            "give at least one --param KEY=V1,V2 and the fit arguments after --, e.g. distpro "
            "sweep-grid runs/grid --param search.alpha.lr=0.01,0.1 -- --config search.yaml"
        )
    trials = grid_trials(ns.param)
    root = Path(ns.root).expanduser()
    runs = [(values, _trial_args(root / f"trial_{i}")) for i, values in enumerate(trials)]
    refuse_set_keys(
        "sweep-grid", fit_args, runs[0][1],
        "each trial's folder, CSV log and process file, which sweep-best reads",
    )  # fmt: skip
    refuse_no_model("sweep-grid", fit_args)
    record_sweep(root, {"params": list(ns.param), "fit_args": fit_args})
    for i, (values, ours) in enumerate(runs):
        print(f"trial {i + 1}/{len(trials)}: {' '.join(values)}")
        fit(["fit", *fit_args, *values, *ours])
    print(f"done: distpro sweep-best {ns.root} -- <retrain arguments>")
    return 0
