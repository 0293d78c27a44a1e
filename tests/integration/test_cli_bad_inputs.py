"""Bad or unusual inputs of the ``distpro`` command: the error each must give (one line, no
traceback), or the right result, and that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from bad_inputs import (  # noqa: E402
    FASHION,
    RUN,
    Case,
    check_case,
    distpro,
    edited,
)

from distpro_lightning.cli.main import cli_main, library_error  # noqa: E402


def cli_fit(*extra: str, teacher: str | None = "resnet20") -> Callable[[Path], object]:
    """``distpro fit`` up to the point where training would start (``run=False``: classes
    are built, nothing is trained)."""

    def act(tmp: Path) -> object:
        model = ["--model.init_args.teacher", teacher] if teacher else []
        return cli_main(
            [*extra, *model, "--trainer.max_steps", "1", "--trainer.logger", "false"]
            + ["--trainer.default_root_dir", str(tmp)],
            run=False,
        )

    return act


def cli_both_sections(tmp: Path) -> None:
    err = io.StringIO()
    act = cli_fit("--config", str(FASHION / "search.yaml"), "--replay.mode", "final")
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        act(tmp)
    assert exc.value.code == 2
    assert "Both the search: and the replay: sections are on" in err.getvalue()
    assert "--replay.enabled false" in err.getvalue()


def cli_sections(tmp: Path) -> None:
    cfg = ["--config", str(FASHION / "retrain.yaml"), "--replay.enabled", "false"]
    on = cli_fit(*cfg, "--config", json.dumps({"replay": {"process": str(tmp / RUN)}}))(tmp)
    assert on.config["replay"]["enabled"] is False  # an explicit false wins
    cfg = ["--config", str(FASHION / "teacher.yaml"), "--replay.process", str(tmp / RUN)]
    on = cli_fit(*cfg, teacher=None)(tmp)
    assert on.config["replay"]["enabled"] is True and not on.config["search"]["enabled"]
    assert [type(c).__name__ for c in on.trainer.callbacks].count("ProcessScheduleCallback") == 1


def cli_case(argv: list[str], says: tuple[str, ...]) -> Case:
    def act(tmp: Path) -> None:
        edited(tmp, version=True)
        (tmp / "trunc.json").write_text((tmp / RUN).read_text()[:50])
        code, err = distpro(*[a.replace("TMP", str(tmp)) for a in argv])
        assert code == 1, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        for text in says:
            assert text.replace("TMP", str(tmp)) in err, err

    return Case(f"distpro {' '.join(argv)}", act)


CASES = [
    Case("CLI: a key turns a section on", cli_sections),
    Case("CLI: search and replay both on", cli_both_sections),
    Case(
        "CLI: implicit replay, file missing",
        cli_fit(
            "--config",
            str(FASHION / "teacher.yaml"),
            "--config",
            '{"replay": {"process": "nope.json"}}',
            teacher=None,
        ),
        FileNotFoundError,
        ("No process file", "nope.json"),
    ),
    Case(
        "CLI: replay file missing",
        cli_fit("--config", str(FASHION / "retrain.yaml"), "--replay.process", "nope.json"),
        FileNotFoundError,
        ("No process file", "nope.json"),
    ),
    cli_case(["process", "summary", "TMP/bad.json"], ("TMP/bad.json", "'version'")),
    cli_case(["process", "summary", "TMP/trunc.json"], ("trunc.json", "not valid JSON")),
    cli_case(["process", "plot", "TMP/missing.json"], ("missing.json",)),
    cli_case(["process", "summary", "TMP"], ("is a directory",)),
    cli_case(
        ["process", "export", "TMP/run.json", "--steps", "4", "-o", "TMP/run.json"],
        ("exists", "--overwrite"),
    ),
    # issue 37, case 20: no bound gave a raw std::bad_alloc
    cli_case(
        ["process", "export", "TMP/run.json", "--steps", "2000000000", "-o", "TMP/long.json"],
        ("--steps must be between 1 and 1,000,000", "got 2,000,000,000"),
    ),
]


@pytest.mark.parametrize("sub", ["test", "validate", "predict"])
def test_evaluating_without_a_checkpoint_is_refused_naming_the_fix(tmp_path, sub):
    """Issue 37, case 14: ``distpro test --config <run>/config.yaml`` tested an untrained
    student."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "student.ckpt").write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text((FASHION / "teacher.yaml").read_text())
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        cli_main([sub, "--config", str(config)])  # refused while parsing: nothing runs
    assert exc.value.code == 2
    text = " ".join(err.getvalue().split())
    assert f"distpro {sub} without --ckpt_path would evaluate the model as the config" in text
    assert str(tmp_path / "checkpoints" / "student.ckpt") in text


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            ["--model.init_args.distillation.transform=[conv_bn]"],
            "model.init_args.distillation.transform is not a setting (did you mean 'transforms'?)",
        ),
        (
            ["--config", json.dumps({"model": {"init_args": {"transforms": ["conv_bn"]}}})],
            "model.init_args.transforms is a flat key of version 0.1: write it in its group, "
            "model.init_args.distillation.transforms",
        ),
        (
            ["--model.init_args.studnet=resnet8"],
            "model.init_args.studnet is not an argument of DistProModule (did you mean 'student'?)",
        ),
    ],
)
def test_a_mistyped_or_flat_model_key_is_named_with_its_fix(tmp_path, extra, says):
    """Issue 37, case 18: jsonargparse's ~88 lines about the model union, no suggestion."""
    with pytest.raises(ValueError) as info:
        cli_fit("--config", str(FASHION / "search.yaml"), *extra)(tmp_path)
    assert says in str(info.value)
    assert library_error(info.value) is info.value  # the console script prints it as one line


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            ["--search.schedul.every_n_steps", "2"],
            "search.schedul is not a setting (did you mean 'search.schedule'?); search takes "
            "alpha, enabled, held_out, hypergradient, output, schedule.",
        ),
        (
            ["--config", json.dumps({"search": {"alpha": {"lrr": 0.1}}})],
            "search.alpha.lrr is not a setting (did you mean 'search.alpha.lr'?)",
        ),
        (
            ["--config", json.dumps({"search": {"alpha_lr": 0.1}})],
            "search.alpha_lr is a flat key of version 0.1: write it in its group, search.alpha.lr",
        ),
        (  # an abbreviation: argparse took it as overwrite, silently
            ["--search.output.overwrit", "true"],
            "search.output.overwrit is not a setting (did you mean 'search.output.overwrite'?)",
        ),
        (["--trainer.max_step", "3"], "did you mean 'trainer.max_steps'?"),
        (
            ["--config", json.dumps({"searhc": {"enabled": True}})],
            "searhc is not a setting (did you mean 'search'?); the config takes ",
        ),
    ],
)
def test_a_mistyped_section_key_is_named_with_the_closest_one(tmp_path, extra, says):
    """Keys of the search, replay and trainer sections: jsonargparse said only "does not
    accept option" (or took an abbreviation for the full key)."""
    with pytest.raises(ValueError) as info:
        cli_fit("--config", str(FASHION / "search.yaml"), *extra)(tmp_path)
    assert says in str(info.value)
    assert library_error(info.value) is info.value


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--compare.seed", "[0]"], "compare.seed is not a setting (did you mean 'compare.seeds'?)"),
        (
            ["--config", json.dumps({"compare": {"budget": {"wal_s": 5}}})],
            "compare.budget.wal_s is not a setting (did you mean 'compare.budget.wall_s'?); "
            "compare.budget takes cut, min_seeds, wall_s, warmup_steps.",
        ),
        (
            ["--model.init_args.distillation.transform=[conv_bn]"],
            "model.init_args.distillation.transform is not a setting (did you mean 'transforms'?)",
        ),
    ],
)  # fmt: skip
def test_distpro_compare_names_the_closest_key_to_a_mistyped_one(tmp_path, capsys, extra, says):
    from distpro_lightning.cli.compare import main as compare_main

    pair = {"model": {"class_path": "distpro_lightning.DistProModule",
                      "init_args": {"student": "resnet8", "teacher": "resnet14"}},
            "data": {"class_path": "distpro_lightning.data.DigitsDataModule"},
            "compare": {"results": str(tmp_path / "r.json")}}  # fmt: skip
    assert compare_main(["--config", json.dumps(pair), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distpro compare: error: ") and says in err, err
    assert err.count("\n") == 1 and not (tmp_path / "r.json").exists()
