"""A `distpro fit` run's checkpoint, reloaded and used as a Lightning user would: with the
user's own student and teacher classes, without the teacher file, for validate, test and
predict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from own_project import SmallCNN
from torch.utils.data import DataLoader, TensorDataset

from distpro_lightning import DistProModule, ProcessScheduleCallback, ProcessSearchCallback
from distpro_lightning.cli.main import cli_main


def _config(tmp_path: Path, teacher: Path, section: str) -> Path:
    model = {
        "class_path": "distpro_lightning.DistProModule",
        "init_args": {
            "student": {"class_path": "own_project.SmallCNN", "init_args": {"width": 4}},
            "teacher": str(teacher),
            "teacher_model": {"class_path": "own_project.SmallCNN", "init_args": {"width": 8}},
            "distillation": {
                "student_taps": ["layer1", "layer2", "layer3"],
                "teacher_taps": ["layer1", "layer2", "layer3"],
                "input_shape": [1, 8, 8],
                "transforms": ["conv_bn"],
            },
            "in_channels": 1,
        },
    }
    sections = {
        "search": {"output": {"save_path": str(tmp_path / "process.json"), "plot": False}},
        "replay": {"mode": "uniform", "plot": False},
    }
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 2,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "limit_val_batches": 0,
            "logger": False,
        },  # fmt: skip
        "model": model,
        "data": {
            "class_path": "distpro_lightning.data.DigitsDataModule",
            "init_args": {"batch_size": 16, "mode": "search" if section == "search" else "retrain"},
        },
        section: sections[section],
    }
    path = tmp_path / f"{section}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _teacher_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.save(SmallCNN(width=8).state_dict(), path)
    return path


def _digits() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(10, 1, 8, 8, generator=g), torch.randint(0, 10, (10,)))
    return DataLoader(data, batch_size=5)


@pytest.mark.parametrize("section", ["search", "replay"])
def test_cli_checkpoint_of_own_classes_reloads_tests_and_predicts(tmp_path, section):
    teacher = _teacher_file(tmp_path)
    config = _config(tmp_path, teacher, section)
    cli = cli_main(["fit", "--config", str(config)])
    ckpt = next(Path(tmp_path).rglob("*.ckpt"))
    expected = cli.model.eval()(next(iter(_digits()))[0])

    # 1. load_from_checkpoint without arguments rebuilds the user's classes
    module = DistProModule.load_from_checkpoint(ckpt)
    assert isinstance(module.student, SmallCNN) and module.student.fc.in_features == 16
    assert torch.allclose(module.eval()(next(iter(_digits()))[0]), expected, atol=1e-6)

    # 2. predict on ordinary (x, y) batches: the student's logits
    from lightning.pytorch import Trainer

    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    out = trainer.predict(module, _digits())
    assert [tuple(o.shape) for o in out] == [(5, 10), (5, 10)]

    # 3. the teacher file gone: a clear error, and teacher=None loads for inference
    teacher.rename(tmp_path / "moved.pt")
    with pytest.raises(Exception, match="teacher"):
        DistProModule.load_from_checkpoint(ckpt)
    blind = DistProModule.load_from_checkpoint(ckpt, teacher=None)
    assert torch.allclose(blind.eval()(next(iter(_digits()))[0]), expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="teacher=None"):
        Trainer(max_steps=1, logger=False, enable_checkpointing=False).fit(blind, _digits())

    # 4. distpro test / predict with the run's own saved config (the process file moved away)
    saved = next(Path(tmp_path).rglob("config.yaml"))
    if (tmp_path / "process.json").exists():
        (tmp_path / "process.json").rename(tmp_path / "elsewhere.json")
    (tmp_path / "moved.pt").rename(teacher)
    cli_main(["test", "--config", str(saved), "--ckpt_path", str(ckpt)])
    with pytest.warns(UserWarning, match="PredictionWriter"):  # no writer: said, with the fix
        cli_main(["predict", "--config", str(saved), "--ckpt_path", str(ckpt)])

    # 5. distpro validate on the same pair: no search/replay callback is active, and the
    # search-mode data's validation split is evaluated with the checkpoint's weights (the
    # run's config has limit_val_batches: 0, as a fit without validation would)
    cli = cli_main(
        ["validate", "--config", str(saved), "--ckpt_path", str(ckpt)]
        + ["--trainer.limit_val_batches=2"]
    )
    # (they are kept inert, so that the checkpoint's search state loads without Lightning's
    # "add the following callbacks" warning)
    sections = (ProcessSearchCallback, ProcessScheduleCallback)
    built = [cb for cb in cli.trainer.callbacks if isinstance(cb, sections)]
    assert built and not any(cb.enabled for cb in built), built
    assert cli.config["validate"][section]["enabled"] is False
    assert torch.allclose(cli.model.eval()(next(iter(_digits()))[0]), expected, atol=1e-6)
    if section == "search":  # retrain-mode data has no validation split
        assert {"val/loss", "val/top1"} <= set(cli.trainer.callback_metrics)
        assert cli.trainer.validate_loop.batch_progress.total.completed == 2
