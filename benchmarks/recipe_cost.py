"""What a user pays end to end: search + replay, as ratios to one ReviewKD run and one Hinton
KD run of the same length, for sparse searches (``search_every_n_steps`` k in 1, 2, 4, 8),
proxy searches (a fraction f in 1, 0.25, 0.1 of the replay's steps) and the unpruned and
pruned (the paper's tau = 0.5) replay.

    .venv/bin/python -m benchmarks.recipe_cost                 # both pairs, CPU
    .venv/bin/python -m benchmarks.recipe_cost --tiny          # the test's smoke form
    python -m benchmarks.recipe_cost --device cuda             # a lent GPU

Every method runs through ``Trainer.fit`` with the real callbacks (``ProcessSearchCallback``
with ``search_every_n_steps=k``, ``ProcessScheduleCallback``) and the recipes' modules, in
interleaved rounds; a timing callback measures each optimizer step. A search of k is timed
over windows of whole multiples of k steps (its mean step, since searched and held steps
alternate); a method's step is the median over rounds of its windows' means (files
without a ``statistic`` field hold the mean over every timed step). The recipe's cost in
replay-length units is ``f * search_k + replay``: a proxy search of fraction f runs f
times as many steps of the same cost (a fraction of the data and/or epochs). Pairs: the project's (resnet20 -> resnet8, Fashion-MNIST 1x28x28, 27
pathways, batch 128) and the official release's (WRN-40-2 -> WRN-16-2, 3x32x32, 100
classes, 10 pathways, batch 64). Weights are random: timing does not depend on them.

``--pairs recommended`` prices the recommended recipes: the project's pair in the search
space that won the paired comparison (9 ``conv_bn`` pathways plus the KD and ReviewKD
pathways, 11). Which pathways tau prunes there depends on the process, and they differ in
cost (the review pathway's ABF fusion is dear, the KD pathway nearly free), so every
recipe the paired comparison evaluated is priced with **its own** searched process
(``--processes``, by default the evidence run's searches of that space on that pair):
``replay_<name>`` replays it through ``ProcessScheduleCallback``, compressed onto the
timed steps (they sample its rows evenly, so their mean is the mean step of its pruned
replay), and its row in ``evaluated`` adds its search at the k and the fraction of the
replay's steps that the process records (its ``search_every_n_steps``; its rows over
``--replay-epochs`` epochs of its steps per epoch). ``replay_pruned`` is the full search's.

``--compiled-replay`` (with ``--pairs recommended`` or an evidence pair) times the unpruned
replay with ``compile_heads=True`` (``replay_compiled``, compiled in the warm-up step) beside ReviewKD,
Hinton KD, the eager replay and the k=4 search, and prices with it the evaluated recipes
whose process prunes nothing (their replay computes what the unpruned replay computes; a
pruned replay would compile again for every new pruning pattern) and the replay alone
(``uniform``), in ``compiled``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from benchmarks.build import build_module
from benchmarks.converged_methods import RECIPE_SEARCHES
from benchmarks.step_cost import N_PRUNED, OFFICIAL, FitMethod, StepTimer, _loaders, _retrain
from distpro_lightning import DistProModule, ProcessSearchCallback
from distpro_lightning.baselines.recipes import RecipeSettings, build_method, distpro_kwargs
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.files import atomic_write_text
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.replay import ProcessScheduleCallback

KS = (1, 2, 4, 8)
# recipe name -> its process: a file, or a process made here (the average of searches)
Processes = dict[str, "str | DistillationProcess"]
# the evidence run's searches of the recommended space on resnet20 -> resnet8: the full
# search (review) and the cheap recipes the paired comparison evaluated
EVIDENCE = "benchmarks/results/evidence_fmnist/process_resnet20-resnet8_shared_{}.json"
RECOMMENDED_PROCESS = EVIDENCE.format("review")
EVALUATED = ("review", "proxy_review", "cheap_review", "cheap10_review")
REPLAY_EPOCHS = 30  # the evidence protocol's retrain
FRACTIONS = (1.0, 0.25, 0.1)
TAU = 0.5


def _search(module: Any, held_out: Any, k: int, val_batches: int = 1) -> FitMethod:
    def callbacks() -> list[Any]:
        module.alpha_logits.fill_(1.0)
        cb = ProcessSearchCallback(
            schedule={"every_n_steps": k, "val_batches_per_step": val_batches},
            output={"save_path": None, "plot": False},
        )
        cb.search_val_loader = held_out
        return [cb]

    return FitMethod(module, callbacks)


def _pruned(module: Any) -> torch.Tensor:
    """Logits with ~60 % of the pathways below tau (the saving the paper reports)."""
    logits = torch.ones(module.num_pathways)
    n = round(module.num_pathways * N_PRUNED / 27)
    logits[torch.randperm(module.num_pathways, generator=torch.Generator().manual_seed(0))[:n]] = (
        0.0
    )
    return logits


def pair_setup(pair: str) -> tuple[RecipeSettings, dict[str, Any], str, str]:
    """``pair``'s recipe settings, `DistProModule` arguments, student and teacher."""
    if pair == "official":
        settings = RecipeSettings(num_classes=100, in_channels=3, input_shape=(3, 32, 32))
        return settings, {**OFFICIAL, "prune_threshold": TAU}, "wrn_16_2", "wrn_40_2"
    if pair in EVIDENCE_PAIRS:  # a pair of the converged protocol, recommended space
        teacher, student = EVIDENCE_PAIRS[pair]
        settings = RecipeSettings(input_shape=(1, 28, 28), space="recommended")
    else:
        space = "recommended" if pair == "recommended" else "paper"
        settings = RecipeSettings(input_shape=(1, 28, 28), space=space)
        student, teacher = "resnet8", "resnet20"
    kwargs = distpro_kwargs(student, teacher, settings, log_pathway_losses=False)
    return settings, kwargs, student, teacher


def pair_methods(pair: str, loaders: Any, processes: Processes | None = None) -> dict:
    """ReviewKD, Hinton KD, the unpruned and pruned replay and the searches of every k;
    in the recommended space ``replay_<name>`` replays each of ``processes`` (name -> file;
    default: the full search's), and the pruned replay is the full search's."""
    processes = processes or {"review": RECOMMENDED_PROCESS}
    settings, dp_kwargs, student, teacher = pair_setup(pair)
    methods = {
        "hinton_kd": FitMethod(build_method("hinton_kd", student, teacher, None, settings)[0], list),
        "reviewkd": FitMethod(
            ReviewKDModule(
                student=student, teacher=teacher, input_shape=list(settings.input_shape),
                warmup_epochs=0, **settings.module_kwargs(),
            ),
            list,
        ),
    }  # fmt: skip
    modules = [build_module(DistProModule, **dp_kwargs) for _ in range(2 + len(KS))]
    methods["replay"] = _retrain(modules[0], torch.ones(modules[0].num_pathways))
    if recommended_space(pair):
        methods["replay_pruned"] = _replay(modules[1], processes.get("review", RECOMMENDED_PROCESS))
        for name, path in processes.items():
            if name != "review":
                module = build_module(DistProModule, **replay_kwargs(dp_kwargs, path))
                methods[f"replay_{name}"] = _replay(module, path)
    else:
        methods["replay_pruned"] = _retrain(modules[1], _pruned(modules[1]))
    for k, module in zip(KS, modules[2:]):
        methods[f"search_k{k}"] = _search(module, loaders[1], k)
    if pair in EVIDENCE_PAIRS:  # issue 34's lever: the search with 4 held-out batches a step
        module = build_module(DistProModule, **dp_kwargs)
        methods[LEVER_SEARCH["review_val4"]] = _search(module, loaders[1], 1, val_batches=4)
    return methods


COMPILED_METHODS = ("hinton_kd", "reviewkd", "replay", "search_k4")
# the converged protocol's other pairs (issue 34), priced in the recommended space with their
# own searched processes (``--processes``; default: the issue-34 run's, `evidence_processes`)
EVIDENCE_PAIRS = {
    "resnet20-resnet8": ("resnet20", "resnet8"),
    "wrn_16_2-mobilenet_v2": ("wrn_16_2", "mobilenet_v2"),
    "wrn_40_2-shufflenet_v1": ("wrn_40_2", "shufflenet_v1"),
}
ISSUE34 = "benchmarks/results/reviewer_fmnist/process_{}_shared_{}.json"


def recommended_space(pair: str) -> bool:
    return pair == "recommended" or pair in EVIDENCE_PAIRS


# a lever's own search step where it differs from ``search_k<k>``
LEVER_SEARCH = {"review_val4": "search_k1_val4"}
# the issue-34 searches priced as recipes: the frozen recipe's first, the cheap recipe, and the
# levers with a search of their own (the 4-held-out-batch search; the search started at the
# tuned fixed combination, a full unpruned search whose tuning grid the report adds)
ISSUE34_PRICED = ("review", "cheap_review", "review_val4", "review_fromfixed")


def evidence_processes(pair: str) -> Processes:
    """The issue-34 run's searches of ``pair`` (`ISSUE34_PRICED`) whose files exist; and
    ``review_mean``, the average of the frozen
    recipe's three searches (`DistillationProcess.average`), once all three exist."""
    found = {n: ISSUE34.format(pair, n) for n in ISSUE34_PRICED}
    out: Processes = {n: p for n, p in found.items() if Path(p).is_file()}
    three = [ISSUE34.format(pair, n) for n in RECIPE_SEARCHES]
    if all(Path(p).is_file() for p in three):
        out["review_mean"] = DistillationProcess.average(
            [DistillationProcess.load(p) for p in three]
        )
    return out


def _as_process(source: str | DistillationProcess) -> DistillationProcess:
    return source if isinstance(source, DistillationProcess) else DistillationProcess.load(source)


def _describe(source: str | DistillationProcess) -> str:
    """A process file's path, or what an average was made of (its sources' fingerprints)."""
    if isinstance(source, str):
        return source
    prints = ", ".join(s["fingerprint"] for s in source.provenance["averaged_from"])
    return f"average of {len(source.provenance['averaged_from'])} searches ({prints})"


def compiled_methods(
    loaders: Any, processes: Processes, pair: str = "recommended"
) -> dict[str, FitMethod]:
    """`COMPILED_METHODS` of ``pair``'s recommended space and its unpruned replay compiled."""
    methods = pair_methods(pair, loaders, processes)
    methods = {name: methods[name] for name in COMPILED_METHODS}
    _, kwargs, _, _ = pair_setup(pair)
    module = build_module(DistProModule, **kwargs, compile_heads=True)
    methods["replay_compiled"] = _retrain(module, torch.ones(module.num_pathways))
    return methods


def compiled_recipes(
    step_s: dict[str, float], processes: Processes, replay_epochs: int = REPLAY_EPOCHS
) -> dict[str, Any]:
    """The evaluated recipes whose process prunes nothing, and the replay alone
    (``uniform``), priced with the compiled replay."""
    rows: dict[str, Any] = {}
    for name, path in processes.items():
        process = _as_process(path)
        if pruned_share(process) > 0:
            continue
        k = int((process.provenance.get("run_settings") or {}).get("search_every_n_steps", 1))
        if f"search_k{k}" not in step_s:  # only COMPILED_METHODS' search is timed
            continue
        rows[name] = {"k": k, "fraction": len(process) / (process.steps_per_epoch * replay_epochs)}
    rows["uniform"] = {"k": None, "fraction": 0.0}
    for row in rows.values():
        search = row["fraction"] * step_s[f"search_k{row['k']}"] if row["k"] else 0.0
        cost = search + step_s["replay_compiled"]
        row["over_reviewkd"] = cost / step_s["reviewkd"]
        row["over_hinton_kd"] = cost / step_s["hinton_kd"]
    return rows


def replay_kwargs(dp_kwargs: dict[str, Any], source: str | DistillationProcess) -> dict:
    """The replay module's arguments for ``source``: the pair's, with the process's own
    pruning threshold and the ``kd_weight`` that gives its weight scale (a process searched
    from a fixed combination has its own, `benchmarks.converged_methods.start_at_fixed`)."""
    process = _as_process(source)
    probe = build_module(DistProModule, **dp_kwargs)
    kd_weight = probe.kd_weight_for_scale(float(process.normalization["scale"]))
    return {**dp_kwargs, "kd_weight": kd_weight, "prune_threshold": process.prune_threshold}


def _replay(module: Any, path: str | DistillationProcess) -> FitMethod:
    return FitMethod(module, lambda: [ProcessScheduleCallback(process=path)])


def evaluated_recipes(
    step_s: dict[str, float], processes: Processes, replay_epochs: int = REPLAY_EPOCHS
) -> dict[str, Any]:
    """The evaluated recipes' own cost: ``searches * fraction * search + replay_<name>``,
    with k and the fraction (its rows over the replay's steps) read from each process file,
    the search step ``search_k<k>`` (a lever's own, `LEVER_SEARCH`), and the number of
    searches an averaged process paid for (1 otherwise)."""
    rows = {}
    for name, path in processes.items():
        process = _as_process(path)
        settings = process.provenance.get("run_settings") or {}
        k = int(settings.get("search_every_n_steps", 1))
        fraction = len(process) / (process.steps_per_epoch * replay_epochs)
        replay = "replay_pruned" if name == "review" else f"replay_{name}"
        searches = len(process.provenance.get("averaged_from") or [None])
        search = LEVER_SEARCH.get(name, f"search_k{k}")
        if search not in step_s:
            raise SystemExit(
                f"{name}: its search step {search} is timed only for the pairs "
                f"{', '.join(EVIDENCE_PAIRS)}; price it with --pairs one of those"
            )
        cost = searches * fraction * step_s[search] + step_s[replay]
        rows[name] = {
            "process": _describe(path), "k": k, "fraction": fraction, "replay": replay,
            "searches": searches, "search": search,
            "pruned_pathway_steps": pruned_share(process),
            "over_reviewkd": cost / step_s["reviewkd"],
            "over_hinton_kd": cost / step_s["hinton_kd"],
        }  # fmt: skip
    return rows


def pruned_share(process: DistillationProcess) -> float:
    """The share of (step, pathway) cells its replay prunes (0 without a threshold)."""
    tau = process.prune_threshold
    return 0.0 if tau is None else float((process.logits <= tau).float().mean())


def default_processes() -> dict[str, str]:
    """The evaluated recipes whose process file exists (the evidence run makes them)."""
    found = {n: EVIDENCE.format(n) for n in EVALUATED if Path(EVIDENCE.format(n)).is_file()}
    missing = sorted(set(EVALUATED) - set(found))
    if missing:
        print(f"recipe_cost: no process file yet for {', '.join(missing)}", file=sys.stderr)
    return found


def parse_processes(items: list[str] | None) -> Processes:
    """``NAME=PATH`` items (``--processes``); none: `default_processes`."""
    if not items:
        return default_processes()
    bad = [i for i in items if "=" not in i]
    if bad:
        raise SystemExit(f"--processes takes NAME=PATH items (e.g. review=process.json): {bad}")
    return dict(i.split("=", 1) for i in items)


def time_pair(
    args: argparse.Namespace,
    methods: dict[str, FitMethod],
    train: Any,
    rounds_s: dict[str, list[float]] | None = None,
) -> dict:
    """Seconds per step of every method: the median over ``args.rounds`` interleaved rounds
    of each fit's mean step over ``args.window`` timed steps (a multiple of every k) after
    one warm-up step; a round disturbed by the shared machine does not move it. The rounds'
    means go to ``rounds_s`` when given."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.rounds):
        for name, method in methods.items():
            timer = StepTimer(torch.device(args.device))
            trainer = Trainer(
                accelerator="cuda" if args.device.startswith("cuda") else "cpu", devices=1,
                max_epochs=1, max_steps=1 + args.window, limit_val_batches=0,
                num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
                callbacks=[timer, *method.callbacks()],
            )  # fmt: skip
            trainer.fit(method.module, train_dataloaders=train)
            times[name].append(statistics.mean(timer.times[1:]))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    if rounds_s is not None:
        rounds_s.update(times)
    return {name: statistics.median(v) for name, v in times.items()}


def recipes(step_s: dict[str, float]) -> dict[str, Any]:
    """Every recipe's cost relative to a ReviewKD and a Hinton KD run of the same length."""
    rows = {}
    for k in KS:
        for f in FRACTIONS:
            for replay in ("replay", "replay_pruned"):
                cost = f * step_s[f"search_k{k}"] + step_s[replay]
                rows[f"k{k}_f{f:g}_{replay}"] = {
                    "k": k, "fraction": f, "replay": replay,
                    "over_reviewkd": cost / step_s["reviewkd"],
                    "over_hinton_kd": cost / step_s["hinton_kd"],
                }  # fmt: skip
    return rows


def batch_for(pair: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if pair == "official":
        return torch.randn(size, 3, 32, 32, generator=g), torch.randint(
            0, 100, (size,), generator=g
        )
    return torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        choices=["project", "official", "recommended", *EVIDENCE_PAIRS],
        help="default: project official (--tiny: project)",
    )
    p.add_argument(
        "--processes", nargs="+", metavar="NAME=PATH",
        help="--pairs recommended: the evaluated recipes' processes (default: the evidence "
        "run's; 'review' is the full search's)",
    )  # fmt: skip
    p.add_argument("--replay-epochs", type=int, default=REPLAY_EPOCHS)
    p.add_argument(
        "--compiled-replay", action="store_true",
        help="--pairs recommended or an evidence pair: price the unpruned recipes with "
        "compile_heads=True",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=128, help="project pair's batch")
    p.add_argument("--official-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--window", type=int, default=8, help="timed steps per fit (a multiple of 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--tiny", action="store_true", help="batch 8, one round of 8 steps (project pair)"
    )
    p.add_argument("--out", default="benchmarks/results/recipe_cost.json")
    return p


def price_pair(args: argparse.Namespace, pair: str, processes: Processes) -> dict[str, Any]:
    """One pair's entry: its methods' step seconds and its recipes' costs."""
    torch.manual_seed(0)
    x, y = batch_for(pair, args.official_batch if pair == "official" else args.batch)
    loaders = _loaders(x, y, 1 + args.window)
    t0 = time.perf_counter()
    rounds_s: dict[str, list[float]] = {}
    if args.compiled_replay and recommended_space(pair):
        methods = compiled_methods(loaders, processes, pair)
        step_s = time_pair(args, methods, loaders[0], rounds_s)
        return {
            "step_s": step_s, "rounds_s": rounds_s,
            "compiled": compiled_recipes(step_s, processes, args.replay_epochs),
            "wall_s": time.perf_counter() - t0,
        }  # fmt: skip
    step_s = time_pair(args, pair_methods(pair, loaders, processes), loaders[0], rounds_s)
    entry = {
        "step_s": step_s, "rounds_s": rounds_s, "recipes": recipes(step_s),
        "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    if recommended_space(pair):
        entry["evaluated"] = evaluated_recipes(step_s, processes, args.replay_epochs)
    return entry


def headline(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What ``main`` prints: each pair's pruned (or compiled) recipes over ReviewKD."""
    return {
        p: {
            k: round(v["over_reviewkd"], 2)
            for k, v in r.get("recipes", r.get("compiled", {})).items()
            if k.endswith("pruned") or "compiled" in r
        }
        for p, r in result["pairs"].items()
    }


def merged(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the pairs an existing ``path`` prices and this call does not (each
    entry names the command that measured it), so pricing one pair keeps the others."""
    if not path.is_file():
        return result
    kept = json.loads(path.read_text()).get("pairs", {})
    return {**result, "pairs": {**kept, **result["pairs"]}}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.tiny:
        args.batch, args.official_batch, args.rounds = 8, 8, 1
    args.pairs = args.pairs or (["project"] if args.tiny else ["project", "official"])
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "command": " ".join(
            ["python -m benchmarks.recipe_cost", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), {args.device}",
        "note": __doc__.split("\n\n")[2].replace("\n", " "),
        "statistic": "median over rounds of each fit's mean step",
        "pairs": {},
    }
    processes = parse_processes(args.processes) if "recommended" in args.pairs else {}
    for pair in args.pairs:
        own = processes
        if pair in EVIDENCE_PAIRS:
            own = parse_processes(args.processes) if args.processes else evidence_processes(pair)
            if "review" not in own:
                raise SystemExit(f"{pair}: no searched process of the frozen recipe yet "
                                 f"({ISSUE34.format(pair, 'review')}); pass --processes review=PATH")  # fmt: skip
        result["pairs"][pair] = price_pair(args, pair, own)
        result["pairs"][pair]["command"] = result["command"]
    atomic_write_text(args.out, json.dumps(merged(Path(args.out), result), indent=1) + "\n")
    print(json.dumps(headline(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
