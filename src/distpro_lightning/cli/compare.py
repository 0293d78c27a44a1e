"""``distpro compare --config pair.yaml``: a paired, validation-tuned comparison of DistPro
with the baselines on the user's own pair (`distpro_lightning.compare`).

The config is ``distpro fit``'s: ``model:`` (a `DistProModule` with the pair's student,
teacher and distillation settings: the search space), ``data:`` (any LightningDataModule;
where it takes ``seed`` and ``mode``, each run gets its seed and each search
``mode: search``), ``trainer:`` (the settings of every run; a ``logger`` there receives the
report), plus ``compare:`` (`CompareSettings`). Every key can be given on the command line
as in LightningCLI (``--compare.seeds [0,1,2]``, ``--trainer.max_epochs 30``);
``--jobs N`` is ``--compare.jobs N``.

``distpro compare --report RESULTS.json`` writes a results file's report and plot again
from its records alone (no config, no model, no data): what a run writes at its end."""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser

from distpro_lightning.cli.keys import key_problem, parser_keys, unknown_key
from distpro_lightning.compare import CompareSettings, Pair, compare
from distpro_lightning.compare.settings import REPLAYS
from distpro_lightning.errors import DistProError

#: Trainer keys that do not change what a run measures (a results file resumes across them).
UNMEASURED = ("logger", "callbacks", "enable_progress_bar", "default_root_dir")


def full_parser() -> LightningArgumentParser:
    """The parser of the whole config: model, data, trainer and compare."""
    help_text = (__doc__ or "").replace("``", "`")  # the module's reST, as plain help
    parser = LightningArgumentParser(prog="distpro compare", description=help_text)
    parser.add_argument("--config", action="config", help="the pair's YAML config")
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False, instantiate=False,
                               sub_configs=True)  # fmt: skip
    parser.add_class_arguments(CompareSettings, "compare", sub_configs=True)
    return parser


def section_parser(key: str) -> LightningArgumentParser:
    parser = LightningArgumentParser()
    base = LightningModule if key == "model" else LightningDataModule
    parser.add_subclass_arguments(base, key, required=True)
    return parser


def build_section(key: str, section: dict[str, Any]) -> Any:
    """A fresh instance of the ``model`` or ``data`` section."""
    parser = section_parser(key)
    return parser.instantiate(parser.parse_object({key: section}))[key]


def data_factory(section: dict[str, Any]) -> Any:
    """``data(seed, search)``: the data section with ``seed`` and ``mode`` set where the
    data module takes them."""
    takes = set(section.get("init_args", {}))

    def data(seed: int, search: bool) -> LightningDataModule:
        given = copy.deepcopy(section)
        args = given.setdefault("init_args", {})
        if "seed" in takes:
            args["seed"] = seed
        if "mode" in takes:
            args["mode"] = "search" if search else "retrain"
        return build_section("data", given)

    return data


def trainer_settings(section: dict[str, Any]) -> dict[str, Any]:
    """The trainer section's arguments, its logger(s) built."""
    parser = LightningArgumentParser()
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False, instantiate=False,
                               sub_configs=True)  # fmt: skip
    init = parser.instantiate(parser.parse_object({"trainer": section}))
    return dict(init["trainer"])


def pair_from_config(config: dict[str, Any]) -> Pair:
    """The `Pair` of a parsed config (model, data and trainer sections as plain values)."""
    model_section = config["model"]
    trainer = trainer_settings(config.get("trainer") or {})
    measured = {k: v for k, v in (config.get("trainer") or {}).items() if k not in UNMEASURED}
    return Pair(
        model=lambda: build_section("model", copy.deepcopy(model_section)),
        data=data_factory(config["data"]),
        trainer=trainer,
        source=("distpro_lightning.cli.compare:pair_from_config", [config]),
        description={
            "model": model_section, "data": config["data"], "trainer": measured,
            "files": file_digests(model_section),
        },
    )  # fmt: skip


def file_digests(section: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every file the model section names (a teacher checkpoint, a student's
    weights): a results file is resumed only with the same files, not just the same
    paths (a retrained teacher at the same path would mix two teachers' runs)."""
    out: dict[str, str] = {}
    for key, value in sorted((section.get("init_args") or {}).items()):
        if isinstance(value, str) and Path(value).is_file():
            out[key] = hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return out


def parse(argv: Sequence[str]) -> tuple[dict[str, Any], CompareSettings]:
    """The config as plain values and the compare settings."""
    argv = ["--compare.jobs" if a == "--jobs" else a for a in argv]
    parser = full_parser()
    problem = key_problem(argv) or unknown_key(argv, parser_keys(parser))
    if problem is not None:
        raise ValueError(problem)
    cfg = parser.parse_args(list(argv))
    config = yaml.safe_load(parser.dump(cfg))
    config.pop("config", None)
    settings = parser.instantiate(cfg)["compare"]
    return config, settings


def compare_main(argv: Sequence[str]) -> int:
    """``distpro compare``: run or resume the comparison; prints the report. With
    ``--report RESULTS.json``: the report of a results file, written again."""
    if argv and argv[0] == "--report":
        if len(argv) != 2:
            raise ValueError(
                "--report takes one results file and nothing else: distpro compare --report "
                "runs/compare/results.json"
            )
        from distpro_lightning.compare.report import render

        print(render(argv[1]))
        return 0
    config, settings = parse(argv)
    takes = set(config["data"].get("init_args") or {})
    if "seed" not in takes:
        print(
            "distpro compare: the data module takes no seed: every seed trains on the same "
            "data (in the seed's own batch order); give it a seed argument to draw a subset "
            "per seed."
        )
    if "mode" not in takes and any(m in REPLAYS for m in settings.methods):
        print(
            "distpro compare: the data module takes no mode: a search uses it as it is, "
            "holding out the batches of its search_val_dataloader()."
        )
    pair = pair_from_config(config)
    payload = compare(pair, settings, command=" ".join(["distpro compare", *argv]))
    from distpro_lightning.compare.report import report_text

    print(report_text(payload, CompareSettings(**payload["effective"])))
    return 0


def main(argv: Sequence[str]) -> int:
    """``compare_main`` with the library's errors as one line and exit status 1."""
    try:
        return compare_main(argv)
    except (DistProError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"distpro compare: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
