"""Lightning's own idioms through ``distpro``: LightningCLI's optimizer groups refused with
the module's key, classes of the working directory importable, evaluation subcommands
without a stray warning or a new run folder beside the fit's, predictions written."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import pytest
import torch

from distpro_lightning.cli.main import main
from distpro_lightning.data import DigitsDataModule

MODEL = [
    "--model=distpro_lightning.DistProModule",
    "--model.init_args.student=resnet8",
    "--model.init_args.teacher=resnet14",
    "--model.init_args.in_channels=1",
    '--model.init_args.distillation={"transforms": ["conv_bn"], "input_shape": [1, 8, 8]}',
    "--data=distpro_lightning.data.DigitsDataModule",
    "--data.init_args.subset=32",
    "--data.init_args.batch_size=16",
]


def _refused(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return " ".join(err.getvalue().split())


@pytest.mark.parametrize("flag", ["--optimizer=Adam", "--lr_scheduler.class_path=StepLR"])
def test_lightning_optimizer_groups_are_refused_with_the_modules_key(flag):
    text = _refused(["fit", *MODEL, flag])
    assert "distpro does not take LightningCLI's --" in text
    assert "--model.init_args.optimizer.name" in text


def test_an_optimizer_key_in_a_config_file_is_refused_with_the_modules_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("optimizer:\n  class_path: torch.optim.Adam\n")
    text = _refused(["fit", "--config", str(config), *MODEL])
    assert f"optimizer: (given in {config})" in text
    assert "model.init_args.optimizer: {name: adamw" in text


def test_a_class_of_the_working_directory_imports_without_pythonpath(tmp_path, monkeypatch):
    (tmp_path / "my_data_here.py").write_text(
        "from distpro_lightning.data import DigitsDataModule\n\n"
        "class MyDigits(DigitsDataModule):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    from distpro_lightning.cli.main import cli_main

    argv = [*MODEL[:-3], "--data=my_data_here.MyDigits", "--data.init_args.subset=32"]
    cli = cli_main([*argv, "--trainer.logger=false"], run=False)
    assert type(cli.datamodule).__name__ == "MyDigits"


# Lightning's ModelCheckpoint notes that a test run's log folder differs from the fit's
# (issue 36: evaluation logs go under <name>/<subcommand>/), which is the point here
@pytest.mark.filterwarnings("ignore:The dirpath has changed from:UserWarning")
def test_test_and_predict_of_a_search_checkpoint(tmp_path):
    """``distpro test`` of a search run's checkpoint, with the run's config (its search:
    section and CSV logger): no "add the following callbacks" warning, the logs under
    ``<name>/test/version_0`` and not in a new ``version_N`` beside the fit's;
    ``distpro predict`` with `PredictionWriter` writes the student's logits."""
    logger = [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        "--trainer.logger.name=search",
    ]
    # 80 digits: the search's held-out 20 % (16) holds one batch of 16, so the data module
    # has no batch to shrink (and says nothing)
    common = [*MODEL, *logger, "--search.alpha.lr=0.1", "--data.init_args.mode=search"]
    common.append("--data.init_args.subset=80")
    common += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    main(["fit", *common, "--trainer.max_steps=1", "--search.output.save_path=null"])
    (ckpt,) = (tmp_path / "search" / "version_0" / "checkpoints").glob("*.ckpt")
    common.append(f"--ckpt_path={ckpt}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["test", *common])
    shown = [str(w.message) for w in caught]
    assert not any("add the following callbacks" in m for m in shown), shown
    assert (tmp_path / "search" / "test" / "version_0" / "metrics.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "search").iterdir()) == ["test", "version_0"]
    with pytest.warns(UserWarning, match="distpro_lightning.PredictionWriter"):
        main(["predict", *common])  # without a writer: said, with the fix
    out = tmp_path / "predictions.pt"
    writer = [
        "--trainer.callbacks+=distpro_lightning.PredictionWriter",
        f"--trainer.callbacks.output_path={out}",
    ]
    main(["predict", *common, *writer])
    saved = torch.load(out, weights_only=True)
    n = len(DigitsDataModule(subset=80).predict_dataloader().dataset)
    assert saved["predictions"].shape == (n, 10)
    assert saved["batch_indices"].tolist() == list(range(n))


def test_load_from_checkpoint_without_its_teacher_file_names_teacher_none(tmp_path):
    """A ``distpro fit`` checkpoint whose teacher file is gone: one FileNotFoundError that
    names ``teacher=None`` (no jsonargparse list of union subtypes); with it, it loads."""
    from distpro_lightning import DistProModule
    from distpro_lightning.models import create

    teacher = tmp_path / "teacher.pt"
    torch.save(create("resnet14", num_classes=10, in_channels=1).state_dict(), teacher)
    model = [a for a in MODEL if "init_args.teacher=" not in a]
    model += [f"--model.init_args.teacher={teacher}", "--model.init_args.teacher_model=resnet14"]
    main(["fit", *model, "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}"])
    (ckpt,) = tmp_path.rglob("*.ckpt")
    teacher.unlink()
    with pytest.raises(FileNotFoundError) as exc:
        DistProModule.load_from_checkpoint(ckpt)
    text = str(exc.value)
    assert "load_from_checkpoint(ckpt, teacher=None)" in text and str(teacher) in text
    assert "Union subtypes" not in text and "Namespace(" not in text
    module = DistProModule.load_from_checkpoint(ckpt, teacher=None)
    assert module.teacher_is_placeholder
