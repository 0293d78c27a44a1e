"""The converged, paired quality protocol: low-data distillation on Fashion-MNIST.

    python -m benchmarks.quality --protocol converged --name converged_cpu --pairs resnet20-resnet8
    python -m benchmarks.quality --protocol converged --device cuda --jobs 12 --name converged_gpu

A teacher is trained on all 60,000 training images (to >= 91 % test top-1). Per seed, a
student trains on ``--subset`` labelled images (default 1,000, drawn per seed from the training
images outside the validation set) for ``--epochs`` epochs (SGD 0.9, wd 5e-4, cosine), long
enough to converge: the learning curves (held-out top-1 and training loss per epoch) are
recorded for every run. Within a seed every method sees the same subset, the same initial
student weights (one state dict per seed, loaded into each method's student) and the same
batch order (a sampler seeded by the seed). The process is searched over the same epochs and
learning-rate schedule on the 80/20 split of the same subset, then replayed.

Model selection never sees the test set: baselines are tuned over a small grid of their own
loss weights (and temperature for Hinton KD); the point with the best mean top-1 on a fixed
validation set of ``--val-size`` training images (disjoint from every subset) is reported.
Every run reports its final weights; no checkpoint is selected.

Controls (same seeds): a random process (random walk of logits with the searched process's
per-step change and spread), the searched process reversed in time, a process searched with
another seed, and the search run's own student. Levers: a second search pass warm-started
from the first pass's alpha_T (``distpro_warm``), and a search with a 10x alpha learning rate
(``distpro_fast``).

The results file resumes like the smoke protocol's: finished runs are kept and only missing
ones are run; a file made with other settings is refused. See ``converged_report.py`` for
the statistics (paired differences with 95 % t-intervals) and the plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.converged_data import FashionTensors  # noqa: E402
from benchmarks.converged_grids import (  # noqa: E402
    CHOSEN,
    choose_point,
    final_grid,
    grid_set,
    params_key,
    parse_params,
    stale_chosen,
)
from benchmarks.converged_methods import (  # noqa: E402
    AVERAGED,
    DEFAULT_METHODS,
    DEFAULT_SEARCHES,
    DERIVED,
    FROM_FIXED,
    METHODS,
    PAIRS,
    RECIPE_SEARCHES,
    SEARCH_VARIANTS,
    TRANSFER_SOURCE,
    build_run,
    derived_process,
    search_process,
    train_teacher,
)
from benchmarks.jobs import in_subprocess, read_spec, schedule
from distpro_lightning.files import atomic_write_text
from distpro_lightning.process import DistillationProcess

# Settings that change what a run measures: a results file is only resumed under the same.
SETTINGS = (
    "subset",
    "epochs",
    "batch_size",
    "lr",
    "alpha_lr",
    "tau",
    "val_size",
    "teacher_epochs",
    "max_steps",
    "transforms",
    "shared_search",
    "grid_seeds",
    "grids",
)
OLD_DEFAULTS = {"grids": "issue20"}  # settings a results file made before them does not hold
SHARED = -1  # the seed field of a shared search


@dataclass(frozen=True)
class Task:
    """One unit of work: a teacher, a search (pair, seed, variant) or a run."""

    kind: str  # "teacher" | "search" | "run"
    pair: str
    method: str = ""
    seed: int = 0
    params: str = ""
    deps: tuple[str, ...] = ()
    resolved: str = ""  # the grid point a "chosen" run uses, set just before it runs

    @property
    def key(self) -> str:
        if self.kind == "teacher":
            return f"teacher:{PAIRS[self.pair][0]}"
        if self.kind == "search":
            return f"search:{self.pair}:{self.seed}:{self.method}"
        return f"run:{self.pair}:{self.method}:{self.seed}:{self.params}"

    @property
    def priority(self) -> float:
        """Teachers, then pair by pair (first pair first): its searches (the first passes
        first), then its runs seed by seed, within a seed the methods of the comparison
        before the controls and the levers: an interrupted run has complete seeds of the
        first pair to report before the second pair's searches start."""
        pair_rank = list(PAIRS).index(self.pair)
        base = -1e6 * pair_rank
        if self.kind == "teacher":  # the first pairs' teachers are committed
            return 1e9 if pair_rank < 2 else base + 2e5
        if self.method in LEVERS:  # issue 34's levers: after every frozen row
            return -2e7 - 10 * self.seed - pair_rank + (1 if self.kind == "search" else 0)
        if self.method in LAST:  # issue 34's order: after every pair's comparison
            return -1e7 - 10 * self.seed - pair_rank
        if self.kind == "search":
            return base + 1e5 + (1 if self.method in ("main", "kd", "review") else 0)
        if self.method in CORE:
            tier = 3
        elif self.method in ("random", "reversed", "distpro_seed2", "uniform_review"):
            tier = 2
        else:
            tier = 1
        return base - 10 * self.seed + tier


CORE = ("student", "hinton_kd", "fitnet", "reviewkd", "equal", "alpha_T", "distpro")
CORE += ("distpro_kd", "alpha_T_kd", "distpro_review", "alpha_T_review", "fixed_review")
CORE += ("distpro_review_s2", "distpro_review_s3")
LAST = ("distpro_review_half", "transfer_review")  # rows run after the pairs' comparisons
# issue 34's levers, registered once its frozen rows ran (docs/quality.md), run after them
LEVERS = ("distpro_review_mean", "distpro_review_val4", "review_val4")
LEVERS += ("distpro_review_fromfixed", "review_fromfixed")
# issue 34's rows (frozen with the recipe, docs/quality.md): the rivals tuned by one rule,
# the frozen recipe's three searches, the controls and cost rows; `--rows issue34`
ISSUE34_METHODS = ("student", "hinton_kd", "reviewkd", "equal", "fixed_review")
ISSUE34_METHODS += ("uniform_review", "alpha_T_review", "distpro_review", "distpro_review_s2")
ISSUE34_METHODS += ("distpro_review_s3", "distpro_cheap_review", "distpro_review_half")
ISSUE34_METHODS += ("transfer_review", "distpro_review_mean", "distpro_review_val4")
ISSUE34_METHODS += ("distpro_review_fromfixed",)
ISSUE34_SEARCHES = (*RECIPE_SEARCHES, "cheap_review", "review_val4", "review_fromfixed")


def out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) / args.name


def process_path(args: argparse.Namespace, pair: str, seed: int, variant: str) -> Path:
    tag = "shared" if seed == SHARED else f"s{seed}"
    return out_dir(args) / f"process_{pair}_{tag}_{variant}.json"


def teacher_path(args: argparse.Namespace, pair: str) -> Path:
    """The teacher weights: ``--teacher-dir`` (the committed teachers) when it holds them,
    else this run's folder."""
    name = f"teacher_{PAIRS[pair][0]}.pt"
    if args.teacher_dir and (Path(args.teacher_dir) / name).is_file():
        return Path(args.teacher_dir) / name
    return out_dir(args) / name


def grids_of(args: argparse.Namespace) -> Any:
    return grid_set({"grids": args.grids})


def search_deps(args: argparse.Namespace, pair: str, method: str) -> list[tuple[str, str]]:
    """The (pair, search variant)s whose process ``method`` on ``pair`` replays: one, or
    the searches an `AVERAGED` method averages."""
    if method == "transfer_review":
        return [TRANSFER_SOURCE]
    return [(pair, variant) for variant in AVERAGED.get(method, (DERIVED[method],))]


def search_seed_of(args: argparse.Namespace, seed: int) -> int:
    return SHARED if args.shared_search else seed


def grid_points(
    args: argparse.Namespace, records: list[dict[str, Any]], pair: str, method: str, seed: int
) -> list[str]:
    """The params keys of ``method``'s runs at ``seed``: its grid (as far as the finished
    runs widen it, `final_grid`) on the grid seeds; on the other seeds the point chosen on
    them (resolved when they are done), once the grid is final, else nothing yet."""
    grid, final = final_grid(method, records, pair, list(args.grid_seeds), grids_of(args))
    if len(grid) == 1 or seed in args.grid_seeds:
        return [params_key(p) for p in grid]
    if final:
        return [CHOSEN]
    missing = [g for g in args.grid_seeds if g not in args.seeds]
    if missing:
        raise SystemExit(
            f"{method}'s grid on {pair} is not done on grid seed(s) {missing}, so its point "
            f"for seed {seed} cannot be chosen: add {missing} to --seeds (or run them first)."
        )
    return []


def start_point_deps(
    args: argparse.Namespace, records: list[dict[str, Any]], pair: str, variant: str
) -> tuple[str, ...] | None:
    """The grid runs whose choice starts the `FROM_FIXED` search ``variant`` on ``pair``,
    once that grid is final; ``None`` before (the search is planned when it is)."""
    method = FROM_FIXED[variant]
    if method not in args.methods and not any(
        r.get("method") == method and r.get("pair") == pair for r in records
    ):
        raise SystemExit(
            f"search {variant} on {pair} starts at {method}'s chosen point, but {method} is "
            "not in --methods and has no runs there: add it to --methods."
        )
    grid, final = final_grid(method, records, pair, list(args.grid_seeds), grids_of(args))
    if not final:
        return None
    return tuple(
        Task("run", pair, method, g, params_key(p)).key for g in args.grid_seeds for p in grid
    )


def pair_searches(
    args: argparse.Namespace, records: list[dict[str, Any]], pair: str, t_deps: tuple[str, ...]
) -> tuple[list[Task], dict[tuple[int, str], str]]:
    """``pair``'s searches (done or not) and their keys by (search seed, variant); a
    `FROM_FIXED` search only once its start point is chosen."""
    searches: list[Task] = []
    search_keys: dict[tuple[int, str], str] = {}
    for seed in args.seeds:
        s_seed = search_seed_of(args, seed)
        for variant in args.searches:
            if (s_seed, variant) in search_keys:
                continue
            deps = t_deps + ((search_keys[(s_seed, "main")],) if variant == "warm" else ())
            if variant in FROM_FIXED:
                start = start_point_deps(args, records, pair, variant)
                if start is None:
                    continue  # its start point is not chosen yet
                deps += start
            task = Task("search", pair, variant, s_seed, deps=deps)
            search_keys[(s_seed, variant)] = task.key
            searches.append(task)
    return searches, search_keys


def method_runs(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    pair: str,
    seed: int,
    deps: tuple[str, ...],
    method: str,
) -> list[Task]:
    """``method``'s runs on ``pair`` and ``seed`` (done or not): a grid's points, or the
    point its final grid chose (`CHOSEN`, after every grid run); ``deps``: the teacher's
    and the searches' it replays."""
    runs = []
    for params in grid_points(args, records, pair, method, seed):
        extra: tuple[str, ...] = ()
        if params == CHOSEN:
            extra = tuple(
                Task("run", pair, method, g, p).key
                for g in args.grid_seeds
                for p in grid_points(args, records, pair, method, g)
            )
        runs.append(Task("run", pair, method, seed, params, deps + extra))
    return runs


def pair_runs(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    pair: str,
    t_deps: tuple[str, ...],
    search_keys: dict[tuple[int, str], str],
) -> list[Task]:
    """``pair``'s runs of every method and seed (done or not) that can be planned now."""
    runs = []
    for seed in args.seeds:
        s_seed = search_seed_of(args, seed)
        for method in args.methods:
            if method == "reversed" and seed not in args.reversed_seeds:
                continue
            if method == "transfer_review" and pair == TRANSFER_SOURCE[0]:
                continue  # transferred to the other pairs only
            deps = t_deps if method != "student" else ()
            source = DERIVED.get(method)
            waits = source in FROM_FIXED and source in args.searches
            if waits and (s_seed, source) not in search_keys:
                continue  # its search is planned once its start point is chosen
            if method in DERIVED:
                deps += tuple(
                    Task("search", src_pair, need, s_seed).key
                    for src_pair, need in search_deps(args, pair, method)
                )
            runs += method_runs(args, records, pair, seed, deps, method)
    return runs


def plan(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[Task]:
    """The tasks not done in ``records`` that can be planned now: finishing them can make
    more (a widened grid, the runs of its final choice), so the runner plans again as
    tasks finish (`run_plan`)."""
    done = {r["key"] for r in records}
    tasks: list[Task] = []
    for pair in args.pairs:
        teacher = Task("teacher", pair)
        if teacher_path(args, pair).is_file():
            done = done | {teacher.key}
        if teacher.key not in done and teacher.key not in {t.key for t in tasks}:
            tasks.append(teacher)
        t_deps = () if teacher.key in done else (teacher.key,)
        searches, search_keys = pair_searches(args, records, pair, t_deps)
        runs = pair_runs(args, records, pair, t_deps, search_keys)
        tasks += [t for t in searches + runs if t.key not in done]
    known = {t.key for t in tasks} | done
    for t in tasks:
        missing = [d for d in t.deps if d not in known]
        if missing:
            raise SystemExit(
                f"{t.key} needs {missing}: add that search variant to --searches "
                "(or the grid seeds to --seeds)."
            )
    return [
        Task(t.kind, t.pair, t.method, t.seed, t.params, tuple(d for d in t.deps if d not in done))
        for t in tasks
    ]


def resolve(args: argparse.Namespace, task: Task, records: list[dict[str, Any]]) -> Task:
    """A "chosen" run with the grid point chosen on validation over the grid seeds; a
    `FROM_FIXED` search with the point of the grid it starts from."""
    if task.kind == "search" and task.method in FROM_FIXED:
        method = FROM_FIXED[task.method]
    elif task.kind == "run" and task.params == CHOSEN:
        method = task.method
    else:
        return task
    point = choose_point(records, task.pair, method, list(args.grid_seeds), grids_of(args))
    return Task(task.kind, task.pair, task.method, task.seed, task.params, task.deps, point)


def execute(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """Run one task in this process and return its JSON-able record."""
    t0 = time.perf_counter()
    data = FashionTensors.load(args.data_dir, args.val_size)
    if task.kind == "teacher":
        record = train_teacher(args, task.pair, data, teacher_path(args, task.pair))
    elif task.kind == "search":
        warm = None
        if task.method == "warm":  # the first pass (main) of the same search seed
            warm = process_path(args, task.pair, task.seed, "main")
        if task.method in FROM_FIXED:  # the chosen point of the grid it starts from
            warm = parse_params(task.resolved)
        record = search_process(
            args,
            task.pair,
            task.seed,
            task.method,
            data,
            teacher_path(args, task.pair),
            process_path(args, task.pair, task.seed, task.method),
            warm,
        )
    else:
        process = None
        if task.method in DERIVED:
            s_seed = search_seed_of(args, task.seed)
            sources = [
                DistillationProcess.load(process_path(args, src_pair, s_seed, variant))
                for src_pair, variant in search_deps(args, task.pair, task.method)
            ]
            source = sources[0] if len(sources) == 1 else DistillationProcess.average(sources)
            process = derived_process(task.method, source, task.seed)
        record = build_run(args, task, data, teacher_path(args, task.pair), process)
    record.update(
        kind=task.kind,
        key=task.key,
        pair=task.pair,
        seed=task.seed,
        wall_s=time.perf_counter() - t0,
        device=args.device,
    )
    return record


def run_worker(spec_path: str, result_path: str) -> int:
    spec = read_spec(spec_path)
    args = argparse.Namespace(**spec["args"])
    torch.set_num_threads(max(1, args.threads))
    torch.set_float32_matmul_precision("high")
    task = Task(**{**spec["task"], "deps": tuple(spec["task"]["deps"])})
    atomic_write_text(result_path, json.dumps(execute(args, task)))
    return 0


def load_payload(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    if args.restart or not path.is_file():
        return {"history": [], "records": []}
    payload = json.loads(path.read_text())
    now = {k: getattr(args, k) for k in SETTINGS}
    there = {k: payload["settings"].get(k, OLD_DEFAULTS.get(k)) for k in SETTINGS}
    differ = [f"{k}: {there[k]!r} there, {v!r} now" for k, v in now.items() if there[k] != v]
    if differ:
        raise SystemExit(
            f"{path} holds runs made with other settings ({'; '.join(differ)}). Pass the same "
            "settings to add runs to it, --restart to discard it, or another --name."
        )
    return payload


def supersede(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Move the runs of a chosen point that a widened grid no longer chooses from
    ``payload["records"]`` to ``payload["superseded"]`` (kept, never reported), so that the
    point now chosen runs on those seeds."""
    records = payload["records"]
    stale = stale_chosen(records, list(args.grid_seeds), grids_of(args))
    stale += stale_starts(args, records)
    if not stale:
        return
    gone = {id(r) for r in stale}
    records[:] = [r for r in records if id(r) not in gone]
    payload.setdefault("superseded", []).extend(stale)
    for r in stale:
        print(f"[converged] {r['key']} at {params_key(r['params'])} superseded: its widened "
              "grid chooses another point (a start point)", flush=True)  # fmt: skip


def stale_starts(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The record of a `FROM_FIXED` search whose start point its final grid no longer
    chooses (the grid was widened or its records changed after it ran), and of every replay
    of it; the search's process file is set aside (``<name>.superseded.json``), so that the
    search runs again from the point now chosen."""
    stale = []
    for r in records:
        variant = r.get("method", "").removeprefix("search_")
        if r.get("kind") != "search" or variant not in FROM_FIXED:
            continue
        method, seeds = FROM_FIXED[variant], list(args.grid_seeds)
        if not final_grid(method, records, r["pair"], seeds, grids_of(args))[1]:
            continue
        now = parse_params(choose_point(records, r["pair"], method, seeds, grids_of(args)))
        if r.get("start_point") == now:
            continue
        stale.append(r)
        stale += [x for x in records if x.get("kind") == "run" and x["pair"] == r["pair"]
                  and DERIVED.get(x["method"]) == variant]  # fmt: skip
        path = process_path(args, r["pair"], r["seed"], variant)
        if path.is_file():
            os.replace(path, path.with_name(f"{path.stem}.superseded.json"))
    return stale


def set_aside_interrupted(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[Path]:
    """Move the process files of searches that have no record (a killed run's, written
    part-way) to ``<name>.interrupted.json``, so that the search runs again from the start
    and no replay reads a half search; kept, and said, never deleted."""
    done = {r["key"] for r in records if r.get("kind") == "search"}
    moved = []
    for path in sorted(out_dir(args).glob("process_*.json")):
        stem = path.stem.removeprefix("process_")
        pair = next((p for p in PAIRS if stem.startswith(f"{p}_")), None)
        if pair is None or "." in stem:  # set aside already, or another run's diverted file
            continue
        tag, _, variant = stem.removeprefix(f"{pair}_").partition("_")
        if not variant or not (tag == "shared" or tag.removeprefix("s").isdigit()):
            continue
        seed = SHARED if tag == "shared" else int(tag.removeprefix("s"))
        if Task("search", pair, variant, seed).key not in done:
            target = path.with_name(f"{path.stem}.interrupted.json")
            os.replace(path, target)
            moved.append(target)
            print(f"[converged] {path.name}: a search with no record (interrupted); set "
                  f"aside as {target.name}, it runs again", flush=True)  # fmt: skip
    return moved


def failed_dependency(task: Task, failed: set[str]) -> dict[str, Any] | None:
    """The failure record of a task whose dependency failed in this call (``--keep-going``):
    it is not run, so a replay never reads the process of a search that did not finish."""
    missing = [d for d in task.deps if d in failed]
    if not missing:
        return None
    return {"failed": f"not run: its dependency {missing[0]} failed", "key": task.key}


def run_plan(
    args: argparse.Namespace,
    payload: dict[str, Any],
    path: Path,
    run: Callable[[list[Task], Callable[[], list[Task]]], None],
) -> None:
    """Plan the tasks left and ``run`` them with a re-planner: a finished task can make new
    ones (a grid widened beyond an edge, the runs of its final choice, the rerun of a
    superseded choice), which the scheduler takes from the re-planner as they appear."""

    def replan() -> list[Task]:
        supersede(args, payload)
        return plan(args, payload["records"])

    tasks = replan()
    print(
        f"[converged] {len(tasks)} task(s) to do, {len(payload['records'])} done in {path}"
        " (more as grids widen)",
        flush=True,
    )
    if tasks:
        run(tasks, replan)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--protocol", choices=["converged"], default="converged")
    p.add_argument("--name", default="converged")
    p.add_argument(
        "--rows", choices=["issue20", "issue34"], default="issue20",
        help="the comparison: issue 20's (the first two pairs, its grids) or issue 34's "
        "(three pairs, ReviewKD's warm-up grid, the fixed combination, three searches of the "
        "frozen recipe, half-epoch and transfer rows); sets the defaults of --pairs, "
        "--methods, --searches and the grids",
    )  # fmt: skip
    p.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    p.add_argument("--searches", nargs="+", choices=SEARCH_VARIANTS, default=None)
    p.add_argument(
        "--import-records", default=None,
        help="a new results file starts from this one's runs (same settings; process files "
        "copied; see `import_records`)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--grid-seeds", type=int, nargs="+", default=[0, 1],
        help="seeds on which the baselines' grids run; the chosen point runs on the others",
    )  # fmt: skip
    p.add_argument(
        "--reversed-seeds", type=int, nargs="+", default=[0, 1],
        help="seeds of the reversed-process control",
    )  # fmt: skip
    p.add_argument(
        "--transforms", nargs="+", default=["conv_bn"],
        help="transform kinds of the search space (conv_bn: 3 x 3 = 9 pathways)",
    )  # fmt: skip
    p.add_argument(
        "--shared-search", type=int, choices=[0, 1], default=1,
        help="1: one search per variant on a subset disjoint from every run's, replayed on "
        "all seeds; 0: one search per seed on the seed's own subset",
    )  # fmt: skip
    p.add_argument(
        "--teacher-dir", default="benchmarks/results/teachers",
        help="where the committed teacher weights are (reused when present; see its README.md)",
    )  # fmt: skip
    p.add_argument("--subset", type=int, default=1000, help="labelled training images per seed")
    p.add_argument("--epochs", type=int, default=30, help="student epochs (search: the same)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--alpha-lr", type=float, default=0.05)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--val-size", type=int, default=5000, help="validation images for tuning")
    p.add_argument(
        "--diagnostics-every", type=int, default=10, help="search steps between diagnoses"
    )
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per task")
    p.add_argument("--deadline", type=float, default=0, help="seconds: start no task after it")
    p.add_argument("--max-steps", type=int, default=-1, help="cap every fit (tests)")
    p.add_argument("--test-batches", type=int, default=0, help="cap test batches (tests)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--restart", action="store_true")
    p.add_argument(
        "--keep-going", action="store_true", help="record a failed task and go on (--jobs 1)"
    )
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return p


ROW_DEFAULTS = {
    "issue20": (list(PAIRS)[:2], list(DEFAULT_METHODS), list(DEFAULT_SEARCHES)),
    "issue34": (list(PAIRS), list(ISSUE34_METHODS), list(ISSUE34_SEARCHES)),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    pairs, methods, searches = ROW_DEFAULTS[args.rows]
    args.pairs = args.pairs or pairs
    args.methods = args.methods or methods
    args.searches = args.searches or searches
    args.grids = args.rows
    return args


def import_records(args: argparse.Namespace, payload: dict[str, Any], source: Path) -> None:
    """Start ``payload`` (a new results file) from ``source``'s finished runs of the methods
    and searches of ``args`` (made with the same settings, apart from the grids): the process
    files they replay are copied beside it, and a ReviewKD run of a file without the warm-up
    grid gains ``warm=0`` (it ran with ``warmup_epochs=0``)."""
    import shutil

    old = json.loads(source.read_text())
    keep = set(args.methods) | {f"search_{v}" for v in args.searches}
    for r in old["records"]:
        if r.get("pair") not in args.pairs or r.get("method") not in keep:
            continue
        r = dict(r)
        if r["method"] == "reviewkd" and args.grids == "issue34" and "warm" not in r["params"]:
            r["params"] = {**r["params"], "warm": 0.0}
            if not r["key"].endswith(CHOSEN):
                r["key"] = Task(
                    "run", r["pair"], "reviewkd", r["seed"], params_key(r["params"])
                ).key
        payload["records"].append(r)
    old_dir = source.parent / source.stem
    for r in payload["records"]:
        if r["kind"] == "search":
            variant = r["method"].removeprefix("search_")
            src = process_path(argparse.Namespace(out=old_dir.parent, name=old_dir.name),
                               r["pair"], r["seed"], variant)  # fmt: skip
            shutil.copyfile(src, process_path(args, r["pair"], r["seed"], variant))
    payload["history"].append({"command": f"imported from {source}", "machine": "-"})


def run_history(args: argparse.Namespace, argv: list[str] | None) -> dict[str, str]:
    """This call's entry in the file's ``history``: the command and the machine it ran on."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} job(s), {args.device}"
    if args.device == "cuda":
        machine += f" ({torch.cuda.get_device_name(0)})"
    command = " ".join(["python", *sys.argv]) if argv is None else f"converged.main({argv!r})"
    return {"command": command, "machine": machine}


@dataclass
class Run:
    """One call's bookkeeping: the payload saved after every finished task, the tasks that
    failed in this call (their dependants are not run), and how a task is run (in this
    process with one job, else in a worker subprocess under ``tmp``)."""

    args: argparse.Namespace
    payload: dict[str, Any]
    path: Path
    tmp: Path
    start: float
    failed: set[str]

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.payload, indent=1) + "\n")

    def on_done(self, task: Task, record: dict[str, Any]) -> None:
        if "failed" in record:  # kept apart: a later command runs the task again
            self.failed.add(task.key)
            self.payload.setdefault("failures", []).append(record)
            self.save()
            print(f"[converged] {task.key} FAILED: {record['failed'][-600:]}", flush=True)
            return
        self.payload["records"].append(record)
        self.save()
        top1 = record.get("top1")
        shown = f"{100 * top1:.2f}%" if top1 is not None else "done"
        print(f"[converged] {task.key}: {shown} ({record['wall_s']:.0f} s)", flush=True)

    def run(self, task: Task) -> dict[str, Any]:
        args = self.args
        if args.deadline and time.perf_counter() - self.start > args.deadline:
            raise TimeoutError(f"--deadline {args.deadline:.0f} s passed before {task.key}")
        skipped = failed_dependency(task, self.failed)
        if skipped is not None:
            return skipped
        try:
            task = resolve(args, task, self.payload["records"])
            if args.jobs == 1:
                return execute(args, task)
            spec = {"args": vars(args), "task": task.__dict__}
            return in_subprocess("benchmarks.converged", spec, task.key, self.tmp, args.threads)
        except Exception as err:  # noqa: BLE001 - one broken task must not stop the others
            if args.jobs == 1 and not args.keep_going:
                raise
            return {"failed": f"{type(err).__name__}: {err}", "key": task.key}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.converged_report import write_report

    args = parse_args(argv)
    if args.worker:
        return run_worker(*args.worker)
    torch.set_num_threads(max(1, args.threads))
    path = Path(args.out) / f"{args.name}.json"
    if args.summarize_only:
        print(write_report(json.loads(path.read_text()), Path(args.out), args.name))
        return 0
    out_dir(args).mkdir(parents=True, exist_ok=True)
    payload = load_payload(args, path)
    set_aside_interrupted(args, payload["records"])
    if args.import_records and not payload["records"]:
        import_records(args, payload, Path(args.import_records))
    payload["history"] = [*payload["history"], run_history(args, argv)]
    payload["settings"] = {k: getattr(args, k) for k in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="converged-") as name:
        run = Run(args, payload, path, Path(name), time.perf_counter(), set())
        try:
            run_plan(
                args,
                payload,
                path,
                lambda ts, more: schedule(ts, args.jobs, run.run, run.on_done, more),
            )
        except TimeoutError as err:
            print(f"[converged] stopped: {err}; a later command resumes the file", flush=True)
        finally:
            run.save()
    print(write_report(payload, Path(args.out), args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
