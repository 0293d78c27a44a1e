"""The ``distpro`` command.

* ``distpro fit|validate|test|predict --config FILE`` — `DistProCLI`, a
  ``LightningCLI`` with subclass mode for the model and the data module and two callback
  sections: ``search:`` (`ProcessSearchCallback`) and ``replay:``
  (`ProcessScheduleCallback`). The search's options are grouped keys, e.g.
  ``--search.alpha.lr 0.1`` (what W&B sweeps pass), the replay's flat ones. A section is on when any of its keys is
  given (in a config file or on the command line) and off when none is; ``enabled: false``
  turns a given section off (logged with the keys it leaves unused; the paper configs use
  it, as their pair files name both the search and the replay file). Both on at once is
  an error. Each fit saves its ``config.yaml`` in its own run folder
  (`distpro_lightning.cli.run_config`); a retrain without a validation split skips
  validation (``limit_val_batches=0``).
* ``distpro process summary|plot|export FILE`` — inspect, plot and interpolate a process
  file; a bad file prints one line naming it and the problem, and exits with status 1.
* ``distpro sweep-best ROOT -- FIT ARGS`` — the best process of a sweep (lowest final
  held-out loss among the trials' process files under ``ROOT``), retrained with
  ``distpro fit FIT ARGS --replay.process BEST`` (see `distpro_lightning.cli.sweeps`).
* ``distpro sweep-grid ROOT --param KEY=V1,V2 [...] -- FIT ARGS`` — an offline sweep: one
  ``distpro fit`` trial per combination of the values, each in its own folder under
  ``ROOT`` with its process file in its log directory; then ``distpro sweep-best ROOT``.
* ``distpro demo`` — the end-to-end Fashion-MNIST demo (see `distpro_lightning.cli.demo`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distpro_lightning.cli.keys import key_problem
from distpro_lightning.cli.run_config import RunConfigCallback
from distpro_lightning.errors import DistProError
from distpro_lightning.process.core import DistillationProcess, ProcessFileError, atomic_write_text
from distpro_lightning.replay import ProcessScheduleCallback
from distpro_lightning.search.callback import ProcessSearchCallback
from distpro_lightning.search.paths import check_file_target, check_writable

SECTIONS = ("search", "replay")
#: Subcommands that never build the search or replay callback (a run's saved config.yaml
#: carries its sections; the process file need not exist any more).
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")


def section_switches(given: Any, subcommand: str | None) -> dict[str, bool]:
    """Whether each callback section is on, from the keys the user gave (a namespace parsed
    without defaults): on when any key is given, unless ``enabled`` is given as false.
    Raises ``ValueError`` when both sections are on."""
    switches: dict[str, bool] = {}
    unused: dict[str, list[str]] = {}
    for name in SECTIONS:
        section = given.get(f"{subcommand}.{name}" if subcommand else name)
        keys = sorted(vars(section)) if section is not None else []
        enabled = getattr(section, "enabled", None) if section is not None else None
        switches[name] = bool(enabled) if enabled is not None else bool(keys)
        if enabled is False and len(keys) > 1:
            unused[name] = [k for k in keys if k != "enabled"]
    for name, keys in unused.items():
        rank_zero_info(
            f"The {name}: section is turned off (enabled: false); its keys {keys} are not used."
        )
    if all(switches.values()):
        raise ValueError(
            "Both the search: and the replay: sections are on: a run either searches a process "
            "(search:) or replays one (replay:). Remove one section, or turn it off with "
            "--search.enabled false / --replay.enabled false."
        )
    return switches


def untrained_evaluation(subcommand: str, configs: Any) -> str:
    """Why ``distpro test|validate|predict`` without ``--ckpt_path`` is refused, naming the
    checkpoints found beside the given config files (a run's folder)."""
    found: list[str] = []
    for config in configs or []:
        folder = Path(str(getattr(config, "absolute", config))).parent
        found += sorted(str(c) for c in folder.glob("**/*.ckpt"))[:3]
    where = f" Checkpoints beside the config: {', '.join(found)}." if found else ""
    return (
        f"distpro {subcommand} without --ckpt_path would evaluate the model as the config "
        "builds it: an untrained student, not the run's. Pass --ckpt_path with the run's "
        f"checkpoint, e.g. --ckpt_path <run dir>/checkpoints/student.ckpt.{where}"
    )


class DocstringHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, with the docstrings' reStructuredText literals
    (````x````) shown as ```x```: ``distpro fit --help`` prints no double backticks."""

    def start_section(self, heading: str | None) -> None:
        super().start_section(heading.replace("``", "`") if heading else heading)

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", "`"))

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace("``", "`")


_GROUP_FIELD = re.compile(r"^--(model\.init_args\.(?:distillation|optimizer))\.(\w+)(?:=(.*))?$")


def null_group_fields(argv: list[str]) -> list[str]:
    """``--model.init_args.distillation.prune_threshold=null`` (or ``... null``) as
    ``--model.init_args.distillation={"prune_threshold": null}``: jsonargparse 4.53 rejects
    ``null`` for a field of a dataclass group inside a ``class_path`` section given as a
    dotted key, while the group's JSON form sets just that field."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        match = _GROUP_FIELD.match(argv[i])
        value = match.group(3) if match else None
        spaced = match is not None and value is None and i + 1 < len(argv)
        if spaced:
            value = argv[i + 1]
        if match is not None and value is not None and value.strip().lower() == "null":
            out.append(f"--{match.group(1)}={json.dumps({match.group(2): None})}")
            i += 2 if spaced else 1
            continue
        out.append(argv[i])
        i += 1
    return out


class DistProArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with `DocstringHelpFormatter` (also for ``--model.help CLASS``,
    whose parser is built of the same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DocstringHelpFormatter)
        super().__init__(*args, **kwargs)


class DistProCLI(LightningCLI):
    """``LightningCLI`` with ``search:`` and ``replay:`` callback sections (see the module
    docs for when a section is on)."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ProcessSearchCallback, "search")
        parser.set_defaults({"search.enabled": False})
        parser.add_lightning_class_args(ProcessScheduleCallback, "replay")
        parser.set_defaults({"replay.enabled": False})

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse twice: first without defaults, to see which section keys were given, then
        in full with each section's ``enabled`` set accordingly (so ``--print_config``
        shows it)."""
        if isinstance(args, dict):
            super().parse_arguments(parser, args)
            return
        argv = null_group_fields(list(sys.argv[1:] if args is None else args))
        problem = key_problem(argv)
        if problem is not None:  # before jsonargparse's pages about every model subtype
            raise ValueError(problem)
        probe = [a for a in argv if not a.startswith("--print_config")]
        given = parser.parse_args(probe, defaults=False)
        subcommand = given.get("subcommand")
        try:
            switches = section_switches(given, subcommand)
        except ValueError as exc:
            parser.error(str(exc))
        if subcommand in EVALUATION_SUBCOMMANDS:
            if not given.get(f"{subcommand}.ckpt_path"):
                parser.error(untrained_evaluation(subcommand, given.get(f"{subcommand}.config")))
            on = [name for name, active in switches.items() if active]
            if on:
                rank_zero_info(
                    f"distpro {subcommand}: the {', '.join(on)} section(s) of the config are not "
                    "built (searching and replaying happen in fit); the model is evaluated as "
                    "it is."
                )
            switches = dict.fromkeys(switches, False)
        argv += [f"--{name}.enabled={str(on).lower()}" for name, on in switches.items()]
        self.config = parser.parse_args(argv)

    def instantiate_classes(self) -> None:
        """Build the model, data and callbacks; an error raised by the library's own
        constructors (an unknown model, a bad setting) comes out as itself, not inside
        jsonargparse's list of union subtypes."""
        try:
            super().instantiate_classes()
        except Exception as exc:
            cause = library_error(exc)
            if cause is None or cause is exc:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self.subcommand == "fit" and getattr(self.datamodule, "has_validation", True) is False:
            # a retrain without a validation split: skip the loop, not an empty loader
            config = self.config[self.subcommand] if self.subcommand else self.config
            given = config.get("trainer", {}).get("limit_val_batches")
            if given not in (None, 0, 0.0):
                rank_zero_warn(
                    f"trainer.limit_val_batches={given} has no effect: the data module has no "
                    "validation split (retrain mode without data.val_fraction), so validation "
                    "is skipped. Give data.val_fraction (e.g. 0.1) to validate."
                )
            kwargs.setdefault("limit_val_batches", 0)
        trainer = super().instantiate_trainer(**kwargs)
        evaluating = self.subcommand in EVALUATION_SUBCOMMANDS
        trainer.callbacks = [
            cb
            for cb in trainer.callbacks
            if getattr(cb, "enabled", True)
            # test/validate/predict keep the run's own config.yaml (the fit's) as it is
            and not (evaluating and isinstance(cb, SaveConfigCallback))
        ]
        return trainer


def library_error(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that this library raised (its raise site is in
    ``distpro_lightning``), or ``None``."""
    import distpro_lightning

    root = str(Path(distpro_lightning.__file__).parent)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and tb.tb_frame.f_code.co_filename.startswith(root):
            return current
        current = current.__cause__ or current.__context__
    return None


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> DistProCLI:
    """Build (and by default run) the Lightning CLI; ``args`` as on the command line."""
    return DistProCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        parser_class=DistProArgumentParser,
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={
            "description": "DistPro for Lightning. Also: `distpro process summary|plot|export "
            "FILE` (process files), `distpro sweep-best ROOT -- FIT ARGS` (retrain a sweep's best "
            "process) and `distpro demo` (the Fashion-MNIST demo)."
        },
    )


def _process_parser() -> argparse.ArgumentParser:
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
    p_exp.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT if it exists (refused otherwise)"
    )
    return parser


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plot_target(path: Path, source: Path) -> Path:
    """A figure's path, refused when it is the process file itself or an existing file
    that is not a PNG (a plot replaces only an earlier plot)."""
    if path.resolve() == source.resolve():
        raise FileExistsError(
            f"distpro process plot: the figure would replace the process file {str(source)!r} "
            "itself; give another output with -o FIGURE.png."
        )
    if path.exists():
        with path.open("rb") as fh:
            if fh.read(8) != PNG_MAGIC:
                raise FileExistsError(
                    f"distpro process plot: {str(path)!r} exists and is not a PNG figure; "
                    "choose another output with -o FIGURE.png (nothing was written)."
                )
    return path


#: The most rows ``distpro process export`` writes (a run's optimizer steps; the file of a
#: million rows of 27 pathways is about 300 MB of JSON).
MAX_EXPORT_STEPS = 1_000_000


def _export(proc: DistillationProcess, ns: argparse.Namespace) -> None:
    if not 1 <= ns.steps <= MAX_EXPORT_STEPS:
        raise ValueError(
            f"distpro process export: --steps must be between 1 and {MAX_EXPORT_STEPS:,} (the "
            f"optimizer steps of the run that replays it), got {ns.steps:,}."
        )
    out = Path(ns.output).expanduser()
    if out.is_dir():
        raise IsADirectoryError(
            f"distpro process export: -o {ns.output!r} is a folder; give a file path inside "
            f"it, e.g. {str(out / 'process.json')!r}."
        )
    what = "distpro process export: -o"
    out = check_file_target(ns.output, what)
    if out.exists() and not ns.overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass --overwrite to replace it.")
    check_writable(ns.output, out, what)
    stretched = proc.interpolate(ns.steps)
    if ns.csv:
        w = stretched.weights()
        rows = [",".join(["step", *stretched.pathway_names])]
        rows += [",".join([str(t), *(f"{v:.6g}" for v in w[t].tolist())]) for t in range(len(w))]
        atomic_write_text(out, "\n".join(rows) + "\n")
    else:
        stretched.save(out)
    print(f"wrote {ns.output} ({ns.steps} steps)")


def process_main(argv: Sequence[str]) -> int:
    """``distpro process summary|plot|export``."""
    parser = _process_parser()
    ns = parser.parse_args(list(argv))
    if ns.action == "export" and ns.steps < 1:
        parser.error("--steps must be >= 1")
    proc = DistillationProcess.load(ns.file)
    if ns.action == "summary":
        from distpro_lightning.modules.summary import process_weight_table

        print(proc.summary())
        print(process_weight_table(proc))
        print(f"prune threshold {proc.prune_threshold}")
    elif ns.action == "plot":
        out = Path(ns.output) if ns.output else Path(ns.file).with_suffix(".png")
        kinds = ["lines", "heatmap"] if ns.kind == "both" else [ns.kind]
        paths = [
            out if kind == kinds[0] else out.with_name(out.stem + f"_{kind}" + out.suffix)
            for kind in kinds
        ]
        for path in paths:  # every target checked before anything is written
            _plot_target(path, Path(ns.file))
        for kind, path in zip(kinds, paths):
            proc.plot(path, kind=kind)
            print(f"wrote {path}")
    else:
        _export(proc, ns)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``distpro`` console script."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "process":
        try:
            code = process_main(argv[1:])
        except (ProcessFileError, OSError, ValueError) as exc:
            message = " ".join(str(exc).split())
            print(f"distpro process: error: {message}", file=sys.stderr)
            code = 1
        raise SystemExit(code)
    if argv and argv[0] in ("sweep-best", "sweep-grid"):
        from distpro_lightning.cli import sweeps

        command = sweeps.sweep_best_main if argv[0] == "sweep-best" else sweeps.sweep_grid_main
        try:
            code = command(argv[1:], cli_main)
        except (FileNotFoundError, ValueError) as exc:
            print(f"distpro {argv[0]}: error: {exc}", file=sys.stderr)
            code = 1
        raise SystemExit(code)
    if argv and argv[0] == "demo":
        from distpro_lightning.cli.demo import demo_main

        raise SystemExit(demo_main(argv[1:]))
    if not from_command_line:
        cli_main(argv)
        return
    try:
        cli_main(None)
    except (DistProError, ValueError, TypeError, OSError) as exc:
        # one line for the errors the library raises on purpose, else the traceback
        cause = library_error(exc)
        if cause is None:
            raise
        print(f"distpro: error: {' '.join(str(cause).split())}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
