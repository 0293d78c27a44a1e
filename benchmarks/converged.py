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
    params_key,
    stale_chosen,
)
from benchmarks.converged_methods import (  # noqa: E402
    DEFAULT_METHODS,
    DEFAULT_SEARCHES,
    DERIVED,
    METHODS,
    PAIRS,
    SEARCH_VARIANTS,
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
)
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
        if self.kind == "teacher":
            return 1e9
        base = -1e6 * pair_rank
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
CORE += ("distpro_kd", "alpha_T_kd", "distpro_review", "alpha_T_review")


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


def search_seed_of(args: argparse.Namespace, seed: int) -> int:
    return SHARED if args.shared_search else seed


def grid_points(
    args: argparse.Namespace, records: list[dict[str, Any]], pair: str, method: str, seed: int
) -> list[str]:
    """The params keys of ``method``'s runs at ``seed``: its grid (as far as the finished
    runs widen it, `final_grid`) on the grid seeds; on the other seeds the point chosen on
    them (resolved when they are done), once the grid is final, else nothing yet."""
    grid, final = final_grid(method, records, pair, list(args.grid_seeds))
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
        search_keys: dict[tuple[int, str], str] = {}
        for seed in args.seeds:
            s_seed = search_seed_of(args, seed)
            for variant in args.searches:
                if (s_seed, variant) in search_keys:
                    continue
                deps = t_deps + ((search_keys[(s_seed, "main")],) if variant == "warm" else ())
                task = Task("search", pair, variant, s_seed, deps=deps)
                search_keys[(s_seed, variant)] = task.key
                if task.key not in done:
                    tasks.append(task)
        for seed in args.seeds:
            s_seed = search_seed_of(args, seed)
            for method in args.methods:
                if method == "reversed" and seed not in args.reversed_seeds:
                    continue
                need = DERIVED.get(method)
                deps = t_deps if method != "student" else ()
                if need is not None:
                    deps = deps + (search_keys[(s_seed, need)],)
                for params in grid_points(args, records, pair, method, seed):
                    extra: tuple[str, ...] = ()
                    if params == CHOSEN:
                        extra = tuple(
                            Task("run", pair, method, g, p).key
                            for g in args.grid_seeds
                            for p in grid_points(args, records, pair, method, g)
                        )
                    task = Task("run", pair, method, seed, params, deps + extra)
                    if task.key not in done:
                        tasks.append(task)
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
    """A "chosen" run with the grid point chosen on validation over the grid seeds."""
    if task.kind != "run" or task.params != CHOSEN:
        return task
    point = choose_point(records, task.pair, task.method, list(args.grid_seeds))
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
            source = process_path(args, task.pair, s_seed, DERIVED[task.method])
            process = derived_process(task.method, DistillationProcess.load(source), task.seed)
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
    differ = [f"{k}: {payload['settings'].get(k)!r} there, {v!r} now" for k, v in now.items()]
    differ = [d for d, (k, v) in zip(differ, now.items()) if payload["settings"].get(k) != v]
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
    stale = stale_chosen(records, list(args.grid_seeds))
    if not stale:
        return
    gone = {id(r) for r in stale}
    records[:] = [r for r in records if id(r) not in gone]
    payload.setdefault("superseded", []).extend(stale)
    for r in stale:
        print(f"[converged] {r['key']} at {params_key(r['params'])} superseded: its widened "
              "grid chooses another point", flush=True)  # fmt: skip


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
    p.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument("--searches", nargs="+", choices=SEARCH_VARIANTS, default=list(DEFAULT_SEARCHES))
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


def main(argv: list[str] | None = None) -> int:
    from benchmarks.converged_report import write_report

    args = parser().parse_args(argv)
    if args.worker:
        return run_worker(*args.worker)
    torch.set_num_threads(max(1, args.threads))
    path = Path(args.out) / f"{args.name}.json"
    if args.summarize_only:
        print(write_report(json.loads(path.read_text()), Path(args.out), args.name))
        return 0
    out_dir(args).mkdir(parents=True, exist_ok=True)
    payload = load_payload(args, path)
    records: list[dict[str, Any]] = payload["records"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} job(s), {args.device}"
    if args.device == "cuda":
        machine += f" ({torch.cuda.get_device_name(0)})"
    command = " ".join(["python", *sys.argv]) if argv is None else f"converged.main({argv!r})"
    payload["history"] = [*payload["history"], {"command": command, "machine": machine}]
    payload["settings"] = {k: getattr(args, k) for k in SETTINGS}
    start = time.perf_counter()

    def save() -> None:
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")

    def on_done(task: Task, record: dict[str, Any]) -> None:
        if "failed" in record:  # kept apart: a later command runs the task again
            payload.setdefault("failures", []).append(record)
            save()
            print(f"[converged] {task.key} FAILED: {record['failed'][-600:]}", flush=True)
            return
        records.append(record)
        save()
        top1 = record.get("top1")
        shown = f"{100 * top1:.2f}%" if top1 is not None else "done"
        print(f"[converged] {task.key}: {shown} ({record['wall_s']:.0f} s)", flush=True)

    def run(task: Task) -> dict[str, Any]:
        if args.deadline and time.perf_counter() - start > args.deadline:
            raise TimeoutError(f"--deadline {args.deadline:.0f} s passed before {task.key}")
        try:
            task = resolve(args, task, records)
            if args.jobs == 1:
                return execute(args, task)
            payload = {"args": vars(args), "task": task.__dict__}
            return in_subprocess("benchmarks.converged", payload, task.key, tmp, args.threads)
        except Exception as err:  # noqa: BLE001 - one broken task must not stop the others
            if args.jobs == 1 and not args.keep_going:
                raise
            return {"failed": f"{type(err).__name__}: {err}", "key": task.key}

    with tempfile.TemporaryDirectory(prefix="converged-") as name:
        tmp = Path(name)
        try:
            run_plan(
                args, payload, path, lambda ts, more: schedule(ts, args.jobs, run, on_done, more)
            )
        except TimeoutError as err:
            print(f"[converged] stopped: {err}; a later command resumes the file", flush=True)
        finally:
            save()
    print(write_report(payload, Path(args.out), args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
