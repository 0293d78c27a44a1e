"""Quality on Fashion-MNIST: the rows of the paper's Table 1 and the epochs curve of Fig. 5.

    .venv/bin/python -m benchmarks.quality --quick          # ~15 min on 2 CPU cores
    .venv/bin/python -m benchmarks.quality                  # full: hours, run by hand
    .venv/bin/python -m benchmarks.quality --jobs 2 --threads 1   # 2 tasks at a time
    .venv/bin/python -m benchmarks.quality --protocol converged ...  # benchmarks/converged.py

This is the short "smoke" protocol (unconverged students, a short search stretched over
the retrain); ``--protocol converged`` runs the converged, paired low-data protocol instead.

For each teacher/student pair: a teacher (reused if its checkpoint
``<out>/teachers/smoke_teacher_<name>.ckpt`` exists, else trained), one
searched process (seed 0), then every method for every seed at the same epoch budget, and
ReviewKD and DistPro at each budget of ``--budgets`` (Fig. 5). All methods share the data
subset, batch size, optimizer (SGD 0.9, wd 5e-4, lr ``--lr``, cosine) and test set (the
10,000 official test images). The process is interpolated to each run's length.

Writes ``benchmarks/results/<name>.json`` (``runs``: one object per run with ``method``,
``seed``, ``epochs``, ``top1``, ``wall_s``, ``process``), ``<name>.md`` (mean +- std per
method and budget) and ``<name>.png`` (accuracy vs epochs).

Long runs: the JSON is rewritten atomically after every finished run, and a later command
with the same ``--name`` resumes it, running only the (pair, method, seed, epochs) runs it
lacks; so an interrupted run loses at most the runs in flight, and more seeds or budgets can
be added later. A file made with other result settings (subset, batch size, learning
rates, tau, search epochs, step caps) is refused rather than mixed; ``--restart`` discards
it. ``--jobs N`` runs N tasks at a time, each in its own process with ``--threads`` torch
threads (default: cores / N), the teacher and the search first since the other runs wait
for them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything

from benchmarks.build import build_module
from benchmarks.jobs import in_subprocess, read_spec, schedule
from distpro_lightning import ClassifierModule, DistProModule, ProcessSearchCallback
from distpro_lightning.baselines.recipes import (
    LABELS,
    METHODS,
    RecipeSettings,
    build_method,
    distpro_kwargs,
)
from distpro_lightning.data import FashionMNISTDataModule
from distpro_lightning.files import atomic_save_figure, atomic_write_text

PAIRS = {
    "resnet20-resnet8": ("resnet20", "resnet8"),
    "wrn_16_2-mobilenet_v2": ("wrn_16_2", "mobilenet_v2"),
}


def trainer(epochs: int, callbacks: list[Any] | None = None, max_steps: int = -1) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks or [],
    )


def data(
    args: argparse.Namespace, mode: str, subset: int | None, seed: int
) -> FashionMNISTDataModule:
    return FashionMNISTDataModule(
        data_dir=args.data_dir, batch_size=args.batch_size, mode=mode, subset=subset, seed=seed
    )


def test_top1(module: Any, args: argparse.Namespace) -> float:
    t = Trainer(
        accelerator="cpu",
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_test_batches=args.test_batches or 1.0,
    )
    dm = data(args, "retrain", None, 0)
    return float(t.test(module, datamodule=dm, verbose=False)[0]["test/top1"])


def teacher_file(args: argparse.Namespace, name: str, out: Path) -> Path:
    """Where the teacher of ``name`` is (the foundation teacher for resnet20 when present):
    ``<out>/teachers/smoke_teacher_<name>.ckpt``, with the default ``--out`` the folder of
    the committed teachers (``benchmarks/results/teachers/README.md``)."""
    if name == "resnet20" and Path(args.resnet20_teacher).is_file():
        return Path(args.resnet20_teacher)
    return out / "teachers" / f"smoke_teacher_{name}.ckpt"


def train_teacher(args: argparse.Namespace, name: str, path: Path) -> dict[str, Any]:
    print(f"[quality] training teacher {name} ({args.teacher_epochs} epochs)", flush=True)
    seed_everything(0)
    module = build_module(
        ClassifierModule, model=name, num_classes=10, in_channels=1, lr=0.1, scheduler="cosine"
    )
    t0 = time.perf_counter()
    t = trainer(args.teacher_epochs, max_steps=args.max_steps)
    t.fit(module, datamodule=data(args, "retrain", None, 0))
    wall = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    t.save_checkpoint(tmp, weights_only=True)
    tmp.replace(path)
    top1 = test_top1(module, args)
    return {"teacher": name, "epochs": args.teacher_epochs, "wall_s": wall, "top1": top1}


def process_file(out: Path, pair: tuple[str, str]) -> Path:
    return out / f"process_{pair[0]}-{pair[1]}.json"


def search(args: argparse.Namespace, pair: tuple[str, str], teacher: Path, path: Path) -> None:
    print(f"[quality] searching {pair[0]} -> {pair[1]}", flush=True)
    seed_everything(0)
    module = build_module(
        DistProModule,
        **distpro_kwargs(pair[1], str(teacher), RecipeSettings(lr=args.lr, tau=args.tau)),
    )
    cb = ProcessSearchCallback(
        alpha={"lr": args.alpha_lr}, output={"save_path": str(path), "plot": True}
    )
    trainer(args.search_epochs, [cb], max_steps=args.max_steps).fit(
        module, datamodule=data(args, "search", args.subset, 0)
    )


def run_method(args: argparse.Namespace, task: Task, out: Path) -> dict[str, Any]:
    t_name, s_name = PAIRS[task.pair]
    teacher = teacher_file(args, t_name, out)
    process = process_file(out, (t_name, s_name))
    seed_everything(task.seed)
    settings = RecipeSettings(lr=args.lr, tau=args.tau)
    module, callbacks = build_method(task.method, s_name, str(teacher), str(process), settings)
    t0 = time.perf_counter()
    trainer(task.epochs, callbacks, args.max_steps).fit(
        module, datamodule=data(args, "retrain", args.subset, task.seed)
    )
    wall = time.perf_counter() - t0
    return {
        "pair": task.pair,
        "method": task.method,
        "seed": task.seed,
        "epochs": task.epochs,
        "top1": test_top1(module, args),
        "wall_s": wall,
        "process": str(process),
        "teacher": str(teacher),
        "subset": args.subset,
        "torch_threads": torch.get_num_threads(),
        "jobs": args.jobs,
    }


@dataclass(frozen=True)
class Task:
    """One unit of work: train a teacher, search a process, or train and test one method."""

    kind: str  # "teacher" | "search" | "run"
    pair: str
    method: str = ""
    seed: int = 0
    epochs: int = 0
    deps: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        if self.kind == "run":
            return f"run:{self.pair}:{self.method}:{self.seed}:{self.epochs}"
        return f"{self.kind}:{PAIRS[self.pair][0] if self.kind == 'teacher' else self.pair}"

    @property
    def priority(self) -> float:
        """Longest-first order, the critical path (teacher, then search) before everything."""
        if self.kind != "run":
            return 1e9 if self.kind == "teacher" else 1e8
        return self.epochs * COST[self.method]


# Relative cost of one epoch of each method (resnet20 -> resnet8, CPU), for scheduling only.
COST = {
    "student": 1,
    "hinton_kd": 2,
    "fitnet": 2,
    "reviewkd": 5,
    "equal": 9,
    "alpha_T": 7,
    "distpro": 7,
}
NEEDS_PROCESS = ("alpha_T", "distpro")


def execute(args: argparse.Namespace, task: Task, out: Path) -> dict[str, Any]:
    """Run one task in this process; returns a JSON-able result."""
    t_name, s_name = PAIRS[task.pair]
    if task.kind == "teacher":
        return train_teacher(args, t_name, teacher_file(args, t_name, out))
    if task.kind == "search":
        search(
            args,
            (t_name, s_name),
            teacher_file(args, t_name, out),
            process_file(out, (t_name, s_name)),
        )
        return {}
    return run_method(args, task, out)


def execute_in_subprocess(
    args: argparse.Namespace, task: Task, out: Path, tmp: Path
) -> dict[str, Any]:
    """Run one task in a fresh interpreter (``--jobs`` > 1), see `jobs.in_subprocess`."""
    payload = {"args": vars(args), "task": asdict(task), "out": str(out)}
    return in_subprocess("benchmarks.quality", payload, task.key, tmp, args.threads)


def worker(spec_path: str, result_path: str) -> int:
    spec = read_spec(spec_path)
    args = argparse.Namespace(**spec["args"])
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    task = Task(**{**spec["task"], "deps": tuple(spec["task"]["deps"])})
    result = execute(args, task, Path(spec["out"]))
    atomic_write_text(result_path, json.dumps(result))
    return 0


def plan_tasks(args: argparse.Namespace, out: Path, done_runs: set[str]) -> list[Task]:
    """Every task still to do, with its dependencies (finished runs are left out)."""
    tasks: list[Task] = []
    for pair in args.pairs:
        t_name, s_name = PAIRS[pair]
        teacher = Task("teacher", pair)
        needs_teacher = not teacher_file(args, t_name, out).is_file()
        if needs_teacher and teacher.key not in {t.key for t in tasks}:
            tasks.append(teacher)
        t_deps = (teacher.key,) if needs_teacher else ()
        earlier = sum(k.startswith(f"run:{pair}:") for k in done_runs)
        if needs_teacher and earlier:
            raise SystemExit(
                f"{earlier} runs of {pair} in the results file used a teacher that is no longer "
                f"at {teacher_file(args, t_name, out)}: put it back, or pass --restart."
            )
        srch = Task("search", pair, deps=t_deps)
        # a new teacher needs a new process too
        if args.fresh or needs_teacher or not process_file(out, (t_name, s_name)).is_file():
            tasks.append(srch)
            p_deps = (srch.key,)
        else:
            p_deps = t_deps
        runs = [(m, args.epochs, s) for s in args.seeds for m in args.methods]
        runs += [
            (m, b, s)
            for s in args.seeds
            for b in args.budgets
            if b != args.epochs
            for m in ("reviewkd", "distpro")
            if m in args.methods
        ]
        for method, epochs, seed in runs:
            deps = () if method == "student" else p_deps if method in NEEDS_PROCESS else t_deps
            task = Task("run", pair, method, seed, epochs, deps)
            if task.key not in done_runs:
                tasks.append(task)
    return tasks


def summarize(
    runs: list[dict[str, Any]],
    title: str,
    history: list[dict[str, Any]],
    teachers: dict[str, Any] | None = None,
) -> str:
    rows: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        rows.setdefault((r["pair"], r["method"], r["epochs"]), []).append(100 * r["top1"])
    lines = [
        f"# {title}",
        "",
        "Made by (in this order; a later command resumes the file, adding only missing runs):",
        "",
        *[f"- `{h['command']}` ({h['machine']})" for h in history],
        "",
        *[
            f"Teacher {name} trained here: {t['epochs']} epochs, {100 * t['top1']:.2f} % test "
            f"top-1 ({t['wall_s']:.0f} s).\n"
            for name, t in sorted((teachers or {}).items())
        ],
        "| pair | method | epochs | seeds | test top-1 % (mean ± std) |",
        "|---|---|---|---|---|",
    ]
    for (pair, method, epochs), vals in sorted(
        rows.items(), key=lambda kv: (kv[0][0], kv[0][2], METHODS.index(kv[0][1]))
    ):
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(
            f"| {pair} | {LABELS[method]} | {epochs} | {len(vals)} | "
            f"{statistics.mean(vals):.2f} ± {std:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    pairs = sorted({r["pair"] for r in runs})
    fig = Figure(figsize=(5 * len(pairs), 3.8), constrained_layout=True)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, pair in zip(axes, pairs):
        for method, style in (("reviewkd", "--"), ("distpro", "-")):
            pts: dict[int, list[float]] = {}
            for r in runs:
                if r["pair"] == pair and r["method"] == method:
                    pts.setdefault(r["epochs"], []).append(100 * r["top1"])
            if pts:
                xs = sorted(pts)
                ax.errorbar(
                    xs,
                    [statistics.mean(pts[x]) for x in xs],
                    yerr=[statistics.stdev(pts[x]) if len(pts[x]) > 1 else 0 for x in xs],
                    linestyle=style,
                    marker="o",
                    capsize=3,
                    label=LABELS[method],
                )
        ax.set_title(pair)
        ax.set_xlabel("epochs")
        ax.set_ylabel("test top-1 (%)")
        ax.legend()
    atomic_save_figure(path, fig)


# Settings that change what a run measures: a results file is only resumed under the same.
RESULT_SETTINGS = (
    "subset",
    "batch_size",
    "lr",
    "alpha_lr",
    "tau",
    "search_epochs",
    "max_steps",
    "test_batches",
)


def load_results(args: argparse.Namespace, json_path: Path) -> dict[str, Any]:
    """The results file to extend (resume), checked against this invocation's settings."""
    if args.restart or not json_path.is_file():
        return {"history": [], "runs": [], "teachers": {}}
    payload = json.loads(json_path.read_text())
    before = payload.get("settings") or {k: payload["args"][k] for k in RESULT_SETTINGS}
    now = {k: getattr(args, k) for k in RESULT_SETTINGS}
    differ = [
        f"{k}: {before.get(k)!r} there, {now[k]!r} now" for k in now if before.get(k) != now[k]
    ]
    if differ:
        raise SystemExit(
            f"{json_path} holds runs made with other settings ({'; '.join(differ)}). Pass the "
            "same settings to add runs to it, --restart to discard it, or another --name."
        )
    if args.fresh and payload["runs"]:
        raise SystemExit(
            f"--fresh searches the process again, but the {len(payload['runs'])} runs in "
            f"{json_path} used the current one: add --restart to discard them, or use another --name."
        )
    return {
        "history": history_of(payload),
        "runs": payload["runs"],
        "teachers": payload.get("teachers", {}),
    }


def history_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The commands that made a results file (files from before ``history`` name one)."""
    return payload.get("history") or [
        {"command": payload["command"], "machine": payload["machine"]}
    ]


def report_text(payload: dict[str, Any], name: str) -> str:
    """``<name>.md``: the summary of a results file's runs."""
    title = f"DistPro quality on Fashion-MNIST ({name})"
    return summarize(payload["runs"], title, history_of(payload), payload.get("teachers"))


def write_report(payload: dict[str, Any], out: Path, name: str) -> str:
    text = report_text(payload, name)
    atomic_write_text(out / f"{name}.md", text)
    plot(payload["runs"], out / f"{name}.png")
    return text


def run_key(r: dict[str, Any]) -> str:
    return Task("run", r["pair"], r["method"], r["seed"], r["epochs"]).key


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", default="quality")
    p.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5, help="the common budget of Table 1")
    p.add_argument("--budgets", type=int, nargs="*", default=[1, 2, 5, 10], help="Fig. 5 budgets")
    p.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=5)
    p.add_argument("--resnet20-teacher", default="runs/fashion_mnist/teacher/teacher.ckpt")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--alpha-lr", type=float, default=0.05)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--fresh", action="store_true", help="search again even if a process exists")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard <name>.json (by default a run resumes it, adding only the missing runs)",
    )
    p.add_argument("--jobs", type=int, default=1, help="tasks in parallel, each in its own process")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads per task (0: cores / jobs)"
    )
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=-1, help="cap every fit (CI smoke runs)")
    p.add_argument("--test-batches", type=int, default=0, help="cap test batches (CI smoke runs)")
    p.add_argument(
        "--quick", action="store_true", help="1 pair, 1 seed, 1 epoch on 5,000 images, budgets 1 2"
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="rewrite <name>.md and <name>.png from an existing <name>.json",
    )
    return p


@dataclass
class Results:
    """The results file a command extends: rewritten (atomically) after every finished task."""

    args: argparse.Namespace
    path: Path
    history: list[dict[str, Any]]
    teachers: dict[str, Any]
    runs: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        return {
            "command": self.history[0]["command"],
            "machine": self.history[0]["machine"],
            "history": self.history,
            "settings": {k: getattr(self.args, k) for k in RESULT_SETTINGS},
            "teachers": self.teachers,
            "args": vars(self.args),
            "runs": self.runs,
        }

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.payload(), indent=1) + "\n")

    def on_done(self, task: Task, result: dict[str, Any]) -> None:
        if task.kind == "teacher":
            self.teachers[result["teacher"]] = result
            self.save()
            print(
                f"[quality] teacher {result['teacher']}: {100 * result['top1']:.2f}% "
                f"({result['wall_s']:.0f} s)",
                flush=True,
            )
        elif task.kind == "run":
            self.runs.append(result)
            self.save()
            print(
                f"[quality] {task.pair} {task.method:<10} seed {task.seed} epochs {task.epochs}: "
                f"{100 * result['top1']:.2f}% ({result['wall_s']:.0f} s)",
                flush=True,
            )


def open_results(args: argparse.Namespace, argv: list[str] | None, out: Path) -> Results:
    """``<name>.json`` to resume (or a new one), with this command added to its history."""
    command = (
        " ".join(["python", *sys.argv]) if argv is None else "quality.main(" + repr(argv) + ")"
    )
    threads = args.threads or torch.get_num_threads()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} job(s) x {threads} torch "
        f"thread(s), torch {torch.__version__}"
    )
    json_path = out / f"{args.name}.json"
    loaded = load_results(args, json_path)
    history = [*loaded["history"], {"command": command, "machine": machine}]
    return Results(args, json_path, history, loaded["teachers"], loaded["runs"])


def run_tasks(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Plan the tasks ``<name>.json`` lacks, run them, then write the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = open_results(args, argv, out)
    tasks = plan_tasks(args, out, {run_key(r) for r in results.runs})
    print(
        f"[quality] {len(tasks)} task(s) to do, {len(results.runs)} run(s) already in "
        f"{results.path}"
    )
    if args.jobs == 1:
        schedule(tasks, 1, lambda t: execute(args, t, out), results.on_done)
    else:
        with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
            schedule(
                tasks,
                args.jobs,
                lambda t: execute_in_subprocess(args, t, out, Path(tmp)),
                results.on_done,
            )
    results.save()
    print(write_report(results.payload(), out, args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = sys.argv[1:] if argv is None else argv
    if "--protocol" in cli and cli[cli.index("--protocol") + 1 :][:1] == ["converged"]:
        from benchmarks.converged import main as converged_main

        return converged_main(argv)
    p = parser()
    args = p.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.summarize_only:
        out = Path(args.out)
        payload = json.loads((out / f"{args.name}.json").read_text())
        print(write_report(payload, out, args.name))
        return 0
    if args.quick:
        args.pairs, args.seeds, args.epochs, args.subset = ["resnet20-resnet8"], [0], 1, 5000
        args.budgets, args.search_epochs = [1, 2], 1
    if args.threads <= 0:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    return run_tasks(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
