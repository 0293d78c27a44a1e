"""The LightningCLI of ``distpro fit|validate|test|predict``: `DistProCLI` with its
``search:`` and ``replay:`` sections, the parsing rules (which section is on, the refusal
of LightningCLI's optimizer groups, ``null`` group fields), the evaluation subcommands'
callbacks and loggers, and `cli_main`. `distpro_lightning.cli.main` dispatches to it (and
imports it only for these subcommands, so the process commands start fast)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distpro_lightning.cli.keys import key_problem, parser_keys, unknown_key
from distpro_lightning.cli.run_config import RunConfigCallback
from distpro_lightning.replay import ProcessScheduleCallback
from distpro_lightning.search.callback import ProcessSearchCallback

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


class DocstringHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, with the docstrings' reStructuredText literals
    (````x````) shown as ```x```: ``distpro fit --help`` prints no double backticks."""

    def start_section(self, heading: str | None) -> None:
        super().start_section(heading.replace("``", "`") if heading else heading)

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", "`"))

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace("``", "`")


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


#: LightningCLI's optimizer and scheduler groups, which ``distpro`` does not add: the
#: student's optimizer is the module's ``optimizer`` group.
LIGHTNING_OPTIMIZER_GROUPS = ("optimizer", "lr_scheduler")

OPTIMIZER_GROUP_REFUSAL = (
    "distpro does not take LightningCLI's {key} (given {where}): the student's optimizer and "
    "schedule are the module's optimizer group, e.g. --model.init_args.optimizer.name adamw "
    "--model.init_args.optimizer.lr 0.001 --model.init_args.optimizer.scheduler cosine (YAML: "
    "model.init_args.optimizer: {{name: adamw, lr: 0.001, scheduler: cosine}}; fields: name, "
    "lr, momentum, weight_decay, nesterov, scheduler, milestones, gamma)."
)


def lightning_optimizer_groups(argv: Sequence[str]) -> str | None:
    """The refusal of LightningCLI's ``--optimizer`` / ``--lr_scheduler`` (on the command
    line or as top-level keys of a ``--config`` file), naming the module's optimizer group
    instead; ``None`` when neither is given."""
    import yaml

    for i, arg in enumerate(argv):
        key = arg.split("=", 1)[0].removeprefix("--").split(".", 1)[0]
        if arg.startswith("--") and key in LIGHTNING_OPTIMIZER_GROUPS:
            return OPTIMIZER_GROUP_REFUSAL.format(key=f"--{key}", where="on the command line")
        config = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        if config and Path(config).is_file():
            data = yaml.safe_load(Path(config).read_text()) or {}
            keys = [k for k in LIGHTNING_OPTIMIZER_GROUPS if isinstance(data, dict) and k in data]
            if keys:
                return OPTIMIZER_GROUP_REFUSAL.format(key=f"{keys[0]}:", where=f"in {config}")
    return None


#: The logger classes whose run folders are ``save_dir/name/version_N``: an evaluation
#: subcommand logs under ``name/<subcommand>``, not in a new version beside the fit runs.
VERSIONED_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def evaluation_logger_names(trainer_config: Any, subcommand: str) -> None:
    """``distpro validate|test|predict`` with the fit's config: its CSV or TensorBoard
    logger writes to ``<save_dir>/<name>/<subcommand>/version_N`` instead of a new
    ``version_N`` beside the search and retrain runs (a logger given a ``version`` keeps
    it)."""
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        class_path = getattr(logger, "class_path", None) or ""
        init = getattr(logger, "init_args", None)
        if class_path.rsplit(".", 1)[-1] not in VERSIONED_LOGGERS or init is None:
            continue
        if init.get("version") is None:
            init["name"] = f"{init.get('name') or 'lightning_logs'}/{subcommand}"


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
        refusal = lightning_optimizer_groups(argv)
        if refusal is not None:
            parser.error(refusal)
        problem = key_problem(argv) or self.unknown_key(parser, argv)
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
        if subcommand in EVALUATION_SUBCOMMANDS:
            evaluation_logger_names(self.config[subcommand].trainer, subcommand)

    def unknown_key(self, parser: Any, argv: Sequence[str]) -> str | None:
        """`keys.unknown_key` for the keys given to the subcommand ``argv[0]`` (or to
        ``parser`` itself, a CLI built with ``run=False``)."""
        parsers = getattr(self, "_subcommand_parsers", {})
        if not parsers:
            return unknown_key(argv, parser_keys(parser))
        if not argv or argv[0] not in parsers:
            return None
        return unknown_key(argv[1:], parser_keys(parsers[argv[0]]))

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
        sections = (ProcessSearchCallback, ProcessScheduleCallback)
        trainer.callbacks = [
            cb
            for cb in trainer.callbacks
            # test/validate/predict keep the sections' callbacks, inert, so that a checkpoint
            # holding their state loads without Lightning's "add the following callbacks"
            if (getattr(cb, "enabled", True) or (evaluating and isinstance(cb, sections)))
            # test/validate/predict keep the run's own config.yaml (the fit's) as it is
            and not (evaluating and isinstance(cb, SaveConfigCallback))
        ]
        if self.subcommand == "predict":
            from lightning.pytorch.callbacks import BasePredictionWriter

            if not any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks):
                rank_zero_warn(
                    "distpro predict writes no file without a prediction writer: add one, e.g. "
                    "--trainer.callbacks+=distpro_lightning.PredictionWriter "
                    "--trainer.callbacks.output_path=predictions.pt (or your own "
                    "lightning.pytorch.callbacks.BasePredictionWriter)."
                )
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


def add_working_directory() -> None:
    """Put the working directory on ``sys.path`` (last), as ``python -m`` and ``python
    main.py`` do for a LightningCLI script: a YAML's ``class_path: my_models.MyNet`` then
    imports ``./my_models.py`` without ``PYTHONPATH=.``."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> DistProCLI:
    """Build (and by default run) the Lightning CLI; ``args`` as on the command line. The
    working directory is importable (`add_working_directory`)."""
    add_working_directory()
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
            "description": "DistPro for Lightning. Also: `distpro process "
            "summary|plot|export|average` (process files), `distpro sweep-best ROOT -- FIT "
            "ARGS` (retrain a sweep's best process), `distpro compare --config pair.yaml` (DistPro against the baselines on "
            "your pair) and `distpro demo` (the Fashion-MNIST demo)."
        },
    )
