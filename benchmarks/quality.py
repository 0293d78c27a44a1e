"""Quality on Fashion-MNIST: the rows of the paper's Table 1 and the epochs curve of Fig. 5.

    .venv/bin/python benchmarks/quality.py --quick          # ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/quality.py                  # full: hours, run by hand

For each teacher/student pair: a teacher (reused if its checkpoint exists, else trained), one
searched process (seed 0), then every method for every seed at the same epoch budget, and
ReviewKD and DistPro at each budget of ``--budgets`` (Fig. 5). All methods share the data
subset, batch size, optimizer (SGD 0.9, wd 5e-4, lr ``--lr``, cosine) and test set (the
10,000 official test images). The process is interpolated to each run's length.

Writes ``benchmarks/results/<name>.json`` (``runs``: one object per run with ``method``,
``seed``, ``epochs``, ``top1``, ``wall_s``, ``process``), ``<name>.md`` (mean +- std per
method and budget) and ``<name>.png`` (accuracy vs epochs).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything

from distpro_lightning import ClassifierModule, DistProModule, ProcessSearchCallback
from distpro_lightning.data import FashionMNISTDataModule
from distpro_lightning.process import atomic_write_text
from distpro_lightning.recipes import LABELS, METHODS, build_method, distpro_kwargs

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


def get_teacher(args: argparse.Namespace, name: str, out: Path) -> Path:
    path = out / f"teacher_{name}.ckpt"
    if name == "resnet20" and Path(args.resnet20_teacher).is_file():
        return Path(args.resnet20_teacher)
    if path.is_file():
        return path
    print(f"[quality] training teacher {name} ({args.teacher_epochs} epochs)", flush=True)
    seed_everything(0)
    module = ClassifierModule(model=name, num_classes=10, in_channels=1, lr=0.1, scheduler="cosine")
    t = trainer(args.teacher_epochs, max_steps=args.max_steps)
    t.fit(module, datamodule=data(args, "retrain", None, 0))
    t.save_checkpoint(path)
    return path


def search(args: argparse.Namespace, pair: tuple[str, str], teacher: Path, out: Path) -> Path:
    path = out / f"process_{pair[0]}-{pair[1]}.json"
    if path.is_file() and not args.fresh:
        return path
    print(f"[quality] searching {pair[0]} -> {pair[1]}", flush=True)
    seed_everything(0)
    module = DistProModule(
        **distpro_kwargs(pair[1], str(teacher), 10, 1, [1, 28, 28], args.lr, args.tau)
    )
    cb = ProcessSearchCallback(save_path=str(path), alpha_lr=args.alpha_lr, plot=True)
    trainer(args.search_epochs, [cb], max_steps=args.max_steps).fit(
        module, datamodule=data(args, "search", args.subset, 0)
    )
    return path


def summarize(runs: list[dict[str, Any]], title: str, command: str, machine: str) -> str:
    rows: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        rows.setdefault((r["pair"], r["method"], r["epochs"]), []).append(100 * r["top1"])
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}",
        "",
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
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
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
    args = p.parse_args(argv)
    if args.summarize_only:
        out = Path(args.out)
        payload = json.loads((out / f"{args.name}.json").read_text())
        title = f"DistPro quality on Fashion-MNIST ({args.name})"
        text = summarize(payload["runs"], title, payload["command"], payload["machine"])
        atomic_write_text(out / f"{args.name}.md", text)
        plot(payload["runs"], out / f"{args.name}.png")
        print(text)
        return 0
    if args.quick:
        args.pairs, args.seeds, args.epochs, args.subset = ["resnet20-resnet8"], [0], 1, 5000
        args.budgets, args.search_epochs = [1, 2], 1
    torch.set_float32_matmul_precision("high")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = (
        " ".join(["python", *sys.argv]) if argv is None else "quality.main(" + repr(argv) + ")"
    )
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    json_path = out / f"{args.name}.json"
    runs: list[dict[str, Any]] = []
    plan: list[tuple[str, str, int, int]] = []
    for pair in args.pairs:
        for seed in args.seeds:
            plan += [(pair, m, args.epochs, seed) for m in args.methods]
            plan += [
                (pair, m, b, seed)
                for b in args.budgets
                if b != args.epochs
                for m in ("reviewkd", "distpro")
                if m in args.methods
            ]
    for pair_name in args.pairs:
        t_name, s_name = PAIRS[pair_name]
        teacher = get_teacher(args, t_name, out)
        process = search(args, (t_name, s_name), teacher, out)
        for pair, method, epochs, seed in plan:
            if pair != pair_name:
                continue
            seed_everything(seed)
            module, callbacks = build_method(
                method, s_name, str(teacher), str(process), lr=args.lr, tau=args.tau
            )
            t0 = time.perf_counter()
            trainer(epochs, callbacks, args.max_steps).fit(
                module, datamodule=data(args, "retrain", args.subset, seed)
            )
            wall = time.perf_counter() - t0
            top1 = test_top1(module, args)
            runs.append(
                {
                    "pair": pair,
                    "method": method,
                    "seed": seed,
                    "epochs": epochs,
                    "top1": top1,
                    "wall_s": wall,
                    "process": str(process),
                    "subset": args.subset,
                }
            )
            print(
                f"[quality] {pair} {method:<10} seed {seed} epochs {epochs}: "
                f"{100 * top1:.2f}% ({wall:.0f} s)",
                flush=True,
            )
            payload = {"command": command, "machine": machine, "args": vars(args), "runs": runs}
            atomic_write_text(json_path, json.dumps(payload, indent=1) + "\n")
    title = f"DistPro quality on Fashion-MNIST ({args.name})"
    atomic_write_text(out / f"{args.name}.md", summarize(runs, title, command, machine))
    plot(runs, out / f"{args.name}.png")
    print(summarize(runs, title, command, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
