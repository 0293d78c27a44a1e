"""The end-to-end Fashion-MNIST demo (``distpro demo``).

Phases: teacher (trained or reused) -> search (a process) -> retrain with the process, and
the baselines at the same budget (student alone, Hinton KD, equally weighted, use alpha_T).
It prints a table of test accuracies and phase times and where the files were written.

The search is the recommended cheap recipe (docs/cost.md): the recommended space, alpha
updated every ``--search-every`` (4) steps, on a proxy (1 epoch on the 80 % split against a
4-epoch retrain: 20 % of its steps), replayed stretched with pruning. Rerunning reuses the
teacher checkpoint and the process when they were made with the same settings (recorded
inside them: the checkpoint's ``demo_settings``, the process provenance's; a process also
needs the same pathways and a finished search), else it trains or searches again and
says which setting differs; ``--fresh`` never reuses. The Fashion-MNIST example's teacher
(``runs/fashion_mnist/teacher/teacher.ckpt``), when present, is reused as it is, and said
to be.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from distpro_lightning.baselines.recipes import (
    LABELS,
    METHODS,
    RecipeSettings,
    build_method,
    distpro_kwargs,
)
from distpro_lightning.data import FashionMNISTDataModule
from distpro_lightning.files import atomic_write, atomic_write_text
from distpro_lightning.modules.classifier import ClassifierModule
from distpro_lightning.modules.distpro import DistProModule
from distpro_lightning.modules.student import OptimizerConfig
from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.search.callback import ProcessSearchCallback

PAIR = {"teacher": "resnet20", "student": "resnet8"}


def _trainer(root: Path, name: str, epochs: int, callbacks: list[Any] | None = None) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=CSVLogger(root / "logs", name=name),
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=10,
    )


def _data(args: argparse.Namespace, mode: str, subset: int | None) -> FashionMNISTDataModule:
    return FashionMNISTDataModule(
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        mode=mode,
        subset=subset,
        seed=args.seed,
        num_workers=args.num_workers,
    )


def _test(trainer: Trainer, module: Any, args: argparse.Namespace) -> float:
    dm = _data(args, "retrain", None)
    out = trainer.test(module, datamodule=dm, verbose=False)
    return float(out[0]["test/top1"])


EXAMPLE_TEACHER = Path("runs/fashion_mnist/teacher/teacher.ckpt")


#: the key under which the demo records, inside a file it made, the settings it made it with
SETTINGS_KEY = "demo_settings"


def recorded_settings(path: Path) -> dict[str, Any] | None:
    """The settings the demo recorded inside ``path`` (a process file's provenance, a
    checkpoint's ``demo_settings`` entry); ``None`` when it holds none. The settings live in
    the file they describe, written with it in one atomic rename: a file and its settings
    can never come from two runs."""
    if path.suffix == ".json":
        had = DistillationProcess.load(path).provenance.get(SETTINGS_KEY)
    else:
        had = torch.load(path, map_location="cpu", weights_only=True).get(SETTINGS_KEY)
    return had if isinstance(had, dict) else None


def differing(path: Path, wanted: dict[str, Any]) -> list[str]:
    """The settings of ``wanted`` that differ from those recorded inside ``path`` (all of
    them, said as one, when nothing was recorded)."""
    had = recorded_settings(path)
    if had is None:
        return [f"{path.name} records no demo settings inside it"]
    return [f"{k} {had.get(k)!r} there, {v!r} now" for k, v in wanted.items() if had.get(k) != v]


def save_teacher(trainer: Trainer, ckpt: Path, settings: dict[str, Any]) -> None:
    """The trained teacher's checkpoint with its settings inside, written atomically."""
    partial = ckpt.with_name(f"{ckpt.stem}.training{ckpt.suffix}")
    trainer.save_checkpoint(partial)
    state = torch.load(partial, map_location="cpu", weights_only=True)
    state[SETTINGS_KEY] = settings
    atomic_write(ckpt, lambda fh: torch.save(state, fh))
    partial.unlink()


def teacher_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "teacher": PAIR["teacher"],
        "teacher_epochs": args.teacher_epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }


def phase_teacher(args: argparse.Namespace, root: Path) -> tuple[Path, float | None]:
    ckpt = root / "teacher.ckpt"
    wanted = teacher_settings(args)
    if not args.fresh and ckpt.is_file():
        why = differing(ckpt, wanted)
        if not why:
            print(f"[demo] teacher: reusing {ckpt}")
            return ckpt, None
        print(f"[demo] teacher: not reusing {ckpt} ({'; '.join(why)}); training again")
    elif not args.fresh and EXAMPLE_TEACHER.is_file():
        print(
            f"[demo] teacher: reusing {EXAMPLE_TEACHER}, the Fashion-MNIST example's teacher "
            "(its own epochs and seed; --teacher-epochs and --seed do not apply to it; --fresh "
            "trains the demo's own)"
        )
        return EXAMPLE_TEACHER, None
    print(f"[demo] teacher: training {PAIR['teacher']} for {args.teacher_epochs} epochs")
    seed_everything(args.seed)
    module = ClassifierModule(
        model=PAIR["teacher"],
        num_classes=10,
        in_channels=1,
        optimizer=OptimizerConfig(lr=0.05, scheduler="cosine"),
    )
    trainer = _trainer(root, "teacher", args.teacher_epochs)
    trainer.fit(module, datamodule=_data(args, "retrain", None))
    save_teacher(trainer, ckpt, wanted)
    return ckpt, _test(trainer, module, args)


def _searched_with(args: argparse.Namespace, module: DistProModule) -> dict[str, Any]:
    """What a reusable process must have been searched with: these settings (as its
    provenance records them)."""
    return {
        "pathways": list(module.pathway_names),
        "alpha_lr": args.alpha_lr,
        "every_n_steps": args.search_every,
        "epochs": args.search_epochs,
    }


def _search_settings(args: argparse.Namespace, teacher: Path) -> dict[str, Any]:
    """The demo's settings a search depends on beyond its provenance (`differing`)."""
    return {
        "teacher": str(teacher),
        "seed": args.seed,
        "subset": args.subset,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "tau": args.tau,
        "space": args.space,
    }


def _reusable(path: Path, wanted: dict[str, Any]) -> str | None:
    """Why the process at ``path`` cannot stand for a search with ``wanted`` (``None``: it
    can); a process from an interrupted search (no end) is not reusable."""
    process = DistillationProcess.load(path)
    prov = process.provenance
    size = prov.get("search_size", {})
    had = {
        "pathways": list(process.pathway_names),
        "alpha_lr": prov.get("alpha_lr"),
        "every_n_steps": prov.get("run_settings", {}).get("search_every_n_steps", 1),
        "epochs": size.get("max_epochs"),
    }
    differ = [f"{k} {had[k]!r} there, {v!r} now" for k, v in wanted.items() if had[k] != v]
    planned = size.get("planned_steps")
    if planned and len(process) < planned:
        differ.append(f"an interrupted search: {len(process)} of {planned} steps")
    return "; ".join(differ) or None


def phase_search(args: argparse.Namespace, root: Path, teacher: Path) -> Path:
    """The demo's process: reused when searched alike, else searched anew into
    ``process.searching.json``, which replaces ``process.json`` (settings inside) only
    once the search has completed: an earlier process is never lost to a failed search."""
    path = root / "process.json"
    seed_everything(args.seed)
    module = DistProModule(**distpro_kwargs(PAIR["student"], str(teacher), _settings(args)))
    wanted = _search_settings(args, teacher)
    if path.is_file() and not args.fresh:
        why = [_reusable(path, _searched_with(args, module)), *differing(path, wanted)]
        if not any(why):
            print(f"[demo] search: reusing {path}")
            return path
        print(
            f"[demo] search: not reusing {path} ({'; '.join(w for w in why if w)}); searching "
            "again (it is replaced only when the new search completes)"
        )
    searching = path.with_name("process.searching.json")
    searching.unlink(missing_ok=True)  # an interrupted demo search: never reused
    print(
        f"[demo] search: {args.search_epochs} epoch(s) on the 80 % split, alpha every "
        f"{args.search_every} step(s), {module.num_pathways} pathways ({args.space} space)"
    )
    search = ProcessSearchCallback(
        hypergradient="finite_difference",
        alpha={"lr": args.alpha_lr},
        schedule={"seed": args.seed, "every_n_steps": args.search_every, "proxy": True},
        output={"save_path": str(searching), "save_every_n_steps": 50, "plot": False},
    )
    trainer = _trainer(root, "search", args.search_epochs, [search])
    trainer.fit(module, datamodule=_data(args, "search", args.subset))
    if trainer.interrupted:
        raise SystemExit(
            f"distpro demo: the search was interrupted; its rows are in {searching}, and "
            f"{path} (if any) is unchanged. Rerun the demo to search again."
        )
    process = DistillationProcess.load(searching)
    process.provenance[SETTINGS_KEY] = wanted
    process.save(path)
    searching.unlink()
    return path


def run_method(
    args: argparse.Namespace, root: Path, teacher: Path, process: Path, method: str
) -> float:
    seed_everything(args.seed)
    settings = _settings(args)
    module, callbacks = build_method(method, PAIR["student"], str(teacher), str(process), settings)
    trainer = _trainer(root, method, args.epochs, callbacks)
    trainer.fit(module, datamodule=_data(args, "retrain", args.subset))
    return _test(trainer, module, args)


DEMO_METHODS = ("student", "hinton_kd", "equal", "alpha_T", "distpro")


def _settings(args: argparse.Namespace) -> RecipeSettings:
    return RecipeSettings(lr=args.lr, tau=args.tau, space=args.space)


def _number(kind: type, lowest: float | None, above: bool = False) -> Any:
    """An argparse ``type`` that refuses, at parse time, a value below ``lowest`` (or at it
    when ``above``) or a non-finite one: nothing is deleted or trained before the
    arguments are known good."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind.__name__}") from None
        if not math.isfinite(value) or (
            lowest is not None and (value <= lowest if above else value < lowest)
        ):
            bound = f"{'>' if above else '>='} {lowest}" if lowest is not None else "finite"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distpro demo", description=__doc__)
    p.add_argument("--root", default="runs/demo", help="output folder")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--fresh", action="store_true", help="retrain the teacher, re-search")
    p.add_argument("--teacher-epochs", type=_number(int, 1), default=3)
    p.add_argument(
        "--search-epochs", type=_number(int, 1), default=1,
        help="the proxy search's epochs on the 80 %% split (a proxy of the retrain: recorded "
        "as such in the process file, so its stretched replay does not warn)",
    )  # fmt: skip
    p.add_argument(
        "--search-every", type=_number(int, 1), default=4,
        help="update alpha every N-th step of the search (1: every step, the full search; "
        "4: the recommended cheap recipe, docs/cost.md)",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=_number(int, 1), default=4, help="budget of the retrain and baselines"
    )
    p.add_argument(
        "--subset", type=_number(int, 0), default=6000, help="training images used (0: all)"
    )
    p.add_argument("--batch-size", type=_number(int, 1), default=128)
    p.add_argument("--lr", type=_number(float, 0, above=True), default=0.05)
    p.add_argument("--alpha-lr", type=_number(float, 0, above=True), default=0.05)
    p.add_argument(
        "--tau", type=_number(float, None), default=0.5, help="pruning threshold on the logits"
    )
    p.add_argument(
        "--space",
        choices=["recommended", "paper"],
        default="recommended",
        help="DistPro's search space: recommended (9 conv_bn pathways + the KD and ReviewKD "
        "pathways, the paired comparison's winner) or paper (27 pathways)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=_number(int, 0), default=0)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEMO_METHODS))
    return p


def _report(args: argparse.Namespace, summary: dict[str, Any], process: Path, png: Path) -> str:
    times, results = summary["times_s"], summary["results"]
    lines = [
        "",
        f"DistPro demo: Fashion-MNIST, {PAIR['teacher']} -> {PAIR['student']}, "
        f"{args.epochs} epoch(s) on {args.subset or 60000} images, test top-1 on 10,000 images",
        f"{'method':<34} {'test top-1':>10} {'time (s)':>9}",
        f"{'teacher ' + PAIR['teacher']:<34} {100 * summary['teacher_top1']:>9.2f}% "
        f"{times['teacher']:>9.1f}",
        f"{'search (process)':<34} {'':>10} {times['search']:>9.1f}",
    ]
    lines += [f"{LABELS[m]:<34} {100 * results[m]:>9.2f}% {times[m]:>9.1f}" for m in results]
    lines += [
        "",
        f"process file: {process}",
        f"process plot: {png}",
        f"logs:         {Path(args.root) / 'logs'} (CSV, one folder per phase)",
    ]
    return "\n".join(lines)


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``distpro demo``: run the demo and print its table."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.subset == 0:
        args.subset = None
    torch.set_float32_matmul_precision("high")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    teacher, teacher_top1 = phase_teacher(args, root)
    times["teacher"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    process = phase_search(args, root, teacher)
    times["search"] = time.perf_counter() - t0
    png = DistillationProcess.load(process).plot(process.with_suffix(".png"))
    results: dict[str, float] = {}
    for method in args.methods:
        print(f"[demo] {LABELS[method]}: {args.epochs} epoch(s)")
        t0 = time.perf_counter()
        results[method] = run_method(args, root, teacher, process, method)
        times[method] = time.perf_counter() - t0
    if teacher_top1 is None:
        teacher_module = ClassifierModule.load_from_checkpoint(
            teacher, map_location="cpu", weights_only=True
        )
        trainer = Trainer(accelerator="cpu", logger=False, enable_model_summary=False)
        teacher_top1 = _test(trainer, teacher_module, args)
    summary = {"teacher_top1": teacher_top1, "results": results, "times_s": times}
    print(_report(args, summary, process, png))
    atomic_write_text(root / "summary.json", json.dumps({**summary, "args": vars(args)}, indent=1))
    return 0
