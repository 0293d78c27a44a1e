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
  file; ``distpro process average FILE... -o OUT`` — the mean weights of several (e.g. the
  searches of one recipe); a bad file prints one line naming it and the problem, and exits
  with status 1.
* ``distpro sweep-best ROOT -- FIT ARGS`` — the best process of a sweep (lowest final
  held-out loss among the trials' process files under ``ROOT``), retrained with
  ``distpro fit FIT ARGS --replay.process BEST`` (see `distpro_lightning.cli.sweeps`).
* ``distpro sweep-grid ROOT --param KEY=V1,V2 [...] -- FIT ARGS`` — an offline sweep: one
  ``distpro fit`` trial per combination of the values, each in its own folder under
  ``ROOT`` with its process file in its log directory; then ``distpro sweep-best ROOT``.
* ``distpro compare --config pair.yaml`` — a paired, validation-tuned comparison of DistPro
  with the baselines on the user's pair (see `distpro_lightning.cli.compare`).
* ``distpro demo`` — the end-to-end Fashion-MNIST demo (see `distpro_lightning.cli.demo`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distpro_lightning.errors import DistProError
from distpro_lightning.process.core import DistillationProcess, ProcessFileError, atomic_write_text
from distpro_lightning.search.paths import check_file_target, check_writable

#: The names of `distpro_lightning.cli.lightning_cli`, read through this module as well
#: (imported on first use: the process commands do not load Lightning).
_LIGHTNING_CLI_NAMES = (
    "DistProCLI", "DistProArgumentParser", "DocstringHelpFormatter", "EVALUATION_SUBCOMMANDS",
    "SECTIONS", "add_working_directory", "cli_main", "evaluation_logger_names",
    "library_error", "lightning_optimizer_groups", "null_group_fields", "section_switches",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LIGHTNING_CLI_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("distpro_lightning.cli.lightning_cli"), name)


def _process_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distpro process", description=process_main.__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    p_sum = sub.add_parser("summary", help="print a summary of a process file")
    p_sum.add_argument("file")
    p_plot = sub.add_parser("plot", help="plot a process file (Fig. 6 lines and a heatmap)")
    p_plot.add_argument("file")
    p_plot.add_argument("-o", "--output", help="output PNG (default: FILE with .png)")
    p_plot.add_argument("--kind", choices=["lines", "heatmap", "both"], default="both")
    p_avg = sub.add_parser(
        "average", help="average the weights of processes of one space and length into a new file"
    )
    p_avg.add_argument("files", nargs="+", metavar="FILE")
    p_avg.add_argument("-o", "--output", required=True)
    p_avg.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT if it exists (refused otherwise)"
    )
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
#: How a figure file of each format matplotlib writes begins (by the output's suffix).
FIGURE_MAGICS: dict[str, tuple[bytes, ...]] = {
    ".png": (PNG_MAGIC,), ".pdf": (b"%PDF-",), ".svg": (b"<?xml", b"<svg"),
    ".eps": (b"%!PS",), ".ps": (b"%!PS",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
}  # fmt: skip


def _plot_target(path: Path, source: Path) -> Path:
    """A figure's path, refused when it is the process file itself or an existing file
    that is not a figure of its suffix's format (a plot replaces only an earlier plot)."""
    if path.resolve() == source.resolve():
        raise FileExistsError(
            f"distpro process plot: the figure would replace the process file {str(source)!r} "
            "itself; give another output with -o FIGURE.png."
        )
    if path.exists():
        suffix = path.suffix.lower() if path.suffix.lower() in FIGURE_MAGICS else ".png"
        with path.open("rb") as fh:
            if not fh.read(8).startswith(FIGURE_MAGICS[suffix]):
                raise FileExistsError(
                    f"distpro process plot: {str(path)!r} exists and is not a "
                    f"{suffix[1:].upper()} figure; choose another output with -o FIGURE.png "
                    "(nothing was written)."
                )
    return path


#: The most rows ``distpro process export`` writes (a run's optimizer steps; the file of a
#: million rows of 27 pathways is about 300 MB of JSON).
MAX_EXPORT_STEPS = 1_000_000


def _output_file(ns: argparse.Namespace) -> Path:
    """``-o`` of ``export`` and ``average``: a writable file, refused when it exists unless
    ``--overwrite``."""
    out = Path(ns.output).expanduser()
    if out.is_dir():
        raise IsADirectoryError(
            f"distpro process {ns.action}: -o {ns.output!r} is a folder; give a file path "
            f"inside it, e.g. {str(out / 'process.json')!r}."
        )
    what = f"distpro process {ns.action}: -o"
    out = check_file_target(ns.output, what)
    if out.exists() and not ns.overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass --overwrite to replace it.")
    check_writable(ns.output, out, what)
    return out


def _export(proc: DistillationProcess, ns: argparse.Namespace) -> None:
    if not 1 <= ns.steps <= MAX_EXPORT_STEPS:
        raise ValueError(
            f"distpro process export: --steps must be between 1 and {MAX_EXPORT_STEPS:,} (the "
            f"optimizer steps of the run that replays it), got {ns.steps:,}."
        )
    out = _output_file(ns)
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
    """``distpro process summary|plot|export|average``."""
    parser = _process_parser()
    ns = parser.parse_args(list(argv))
    if ns.action == "export" and ns.steps < 1:
        parser.error("--steps must be >= 1")
    if ns.action == "average":
        out = _output_file(ns)
        mean = DistillationProcess.average([DistillationProcess.load(f) for f in ns.files])
        mean.save(out)
        n = len(ns.files)
        print(f"wrote {ns.output} (the mean weights of {n} process{'es' if n > 1 else ''})")
        return 0
    proc = DistillationProcess.load(ns.file)
    if ns.action == "summary":
        print(proc.summary())
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
    """Entry point of the ``distpro`` console script (Lightning is imported only for the
    subcommands that need it)."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "process":
        try:
            code = process_main(argv[1:])
        except (ProcessFileError, OSError, ValueError) as exc:
            message = " ".join(str(exc).split())
            named = message.startswith("distpro process")  # it names its subcommand itself
            print(f"{'' if named else 'distpro process: '}error: {message}", file=sys.stderr)
            code = 1
        raise SystemExit(code)
    from distpro_lightning.cli.lightning_cli import cli_main, library_error

    if argv and argv[0] in ("sweep-best", "sweep-grid"):
        from distpro_lightning.cli import sweeps

        command = sweeps.sweep_best_main if argv[0] == "sweep-best" else sweeps.sweep_grid_main
        try:
            code = command(argv[1:], cli_main)
        except (FileNotFoundError, ValueError) as exc:
            print(f"distpro {argv[0]}: error: {exc}", file=sys.stderr)
            code = 1
        raise SystemExit(code)
    if argv and argv[0] == "compare":
        from distpro_lightning.cli.compare import main as compare_main

        raise SystemExit(compare_main(argv[1:]))
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
