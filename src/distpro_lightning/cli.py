"""The ``distpro`` command.

* ``distpro fit|validate|test|predict --config FILE`` — :class:`DistProCLI`, a
  ``LightningCLI`` with subclass mode for the model and the data module and two callback
  sections: ``search:`` (:class:`ProcessSearchCallback`) and ``replay:``
  (:class:`ProcessScheduleCallback`), both off unless ``enabled: true``. Their options are
  flat keys, e.g. ``--search.alpha_lr 0.1`` (what W&B sweeps pass).
* ``distpro process summary|plot|export FILE`` — inspect, plot and interpolate a process file.
* ``distpro demo`` — the end-to-end Fashion-MNIST demo (see :mod:`distpro_lightning.demo`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

from .process import DistillationProcess
from .schedule import ProcessScheduleCallback
from .search import ProcessSearchCallback


class DistProCLI(LightningCLI):
    """``LightningCLI`` with ``search:`` and ``replay:`` callback sections."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ProcessSearchCallback, "search")
        parser.set_defaults({"search.enabled": False})
        parser.add_lightning_class_args(ProcessScheduleCallback, "replay")
        parser.set_defaults({"replay.enabled": False})

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks = [cb for cb in trainer.callbacks if getattr(cb, "enabled", True)]
        return trainer


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> DistProCLI:
    """Build (and by default run) the Lightning CLI; ``args`` as on the command line."""
    return DistProCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={
            "description": "DistPro for Lightning. Also: `distpro process summary|plot|export "
            "FILE` (process files) and `distpro demo` (the Fashion-MNIST demo)."
        },
    )


def process_main(argv: Sequence[str]) -> int:
    """``distpro process summary|plot|export``."""
    parser = argparse.ArgumentParser(prog="distpro process", description=process_main.__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    p_sum = sub.add_parser("summary", help="print a summary of a process file")
    p_sum.add_argument("file")
    p_plot = sub.add_parser("plot", help="plot a process file (Fig. 6 lines and a heatmap)")
    p_plot.add_argument("file")
    p_plot.add_argument("-o", "--output", help="output PNG (default: FILE with .png)")
    p_plot.add_argument("--kind", choices=["lines", "heatmap", "both"], default="both")
    p_exp = sub.add_parser("export", help="interpolate to a number of steps and write a new file")
    p_exp.add_argument("file")
    p_exp.add_argument("--steps", type=int, required=True, help="length of the new process")
    p_exp.add_argument("-o", "--output", required=True)
    p_exp.add_argument("--csv", action="store_true", help="write normalised weights as CSV")
    ns = parser.parse_args(list(argv))
    proc = DistillationProcess.load(ns.file)
    if ns.action == "summary":
        print(proc.summary())
    elif ns.action == "plot":
        from pathlib import Path

        out = Path(ns.output) if ns.output else Path(ns.file).with_suffix(".png")
        kinds = ["lines", "heatmap"] if ns.kind == "both" else [ns.kind]
        for kind in kinds:
            path = out if kind == kinds[0] else out.with_name(out.stem + f"_{kind}" + out.suffix)
            proc.plot(path, kind=kind)
            print(f"wrote {path}")
    else:
        if ns.steps < 1:
            parser.error("--steps must be >= 1")
        stretched = proc.interpolate(ns.steps)
        if ns.csv:
            from .process import atomic_write_text

            w = stretched.weights()
            rows = [",".join(["step", *stretched.pathway_names])]
            rows += [
                ",".join([str(t), *(f"{v:.6g}" for v in w[t].tolist())]) for t in range(len(w))
            ]
            atomic_write_text(ns.output, "\n".join(rows) + "\n")
        else:
            stretched.save(ns.output)
        print(f"wrote {ns.output} ({ns.steps} steps)")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``distpro`` console script."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "process":
        raise SystemExit(process_main(argv[1:]))
    if argv and argv[0] == "demo":
        from .demo import demo_main

        raise SystemExit(demo_main(argv[1:]))
    cli_main(None if from_command_line else argv)


if __name__ == "__main__":
    main()
