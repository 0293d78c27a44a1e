"""Bringing your own pieces: a student under another attribute, a held-out loader from
config, a teacher checkpoint with its architecture as class_path, the exported student
loaded without the teacher, manual optimization with the search."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import make_module, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from own_project import NetModule, PlainData

from distpro_lightning import (
    DistillationProcess,
    DistProModule,
    ProcessScheduleCallback,
    ProcessSearchCallback,
    load_student,
)
from distpro_lightning.cli.main import cli_main
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.models import create


def test_student_attribute_stores_weights_once_and_searches(tmp_path):
    torch.manual_seed(0)
    m = NetModule()
    assert m.student is m.net
    keys = list(m.state_dict())
    assert any(k.startswith("net.") for k in keys)
    assert not any(k.startswith("student.") for k in keys)
    assert len(keys) == len(set(keys))
    cb = ProcessSearchCallback(held_out="val_dataloader", output={"save_path": None})
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[cb]).fit(m, datamodule=PlainData())
    assert len(cb.process) == 2 and not torch.equal(cb.process.logits[1], torch.ones(3))
    # the exported student loads into a fresh network without the teacher
    path = m.export_student(str(tmp_path / "student.pt"))
    fresh = load_student(path, model=create("resnet8", num_classes=10, in_channels=1))
    x = torch.randn(4, 1, 8, 8)
    m.eval()
    assert torch.equal(fresh(x), m.net(x))
    with pytest.raises(ValueError, match="model=YourNet"):
        load_student(path)  # a module given as such names no registry architecture


def test_held_out_data_module_from_config_and_missing_method_message():
    torch.manual_seed(0)
    cb = ProcessSearchCallback(held_out=PlainData(), output={"save_path": None})
    m = make_module(transforms=["conv_bn"])
    quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[cb]).fit(
        m,
        datamodule=DigitsDataModule(batch_size=16, subset=64),  # retrain mode: no split
    )
    assert len(cb.held_out.dataset) == 64  # PlainData's train_dataloader served it
    bad = ProcessSearchCallback(held_out="holdout_loader", output={"save_path": None})
    with pytest.raises(RuntimeError, match="no holdout_loader"):
        quiet_trainer(max_steps=1, callbacks=[bad]).fit(
            make_module(transforms=["conv_bn"]), datamodule=PlainData()
        )


def test_held_out_and_teacher_architecture_from_yaml(tmp_path):
    # a checkpoint of the user's own LightningModule: the network under "net.", no hparams
    teacher = create("resnet14", num_classes=10, in_channels=1)
    ckpt = tmp_path / "own.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in teacher.state_dict().items()}}, ckpt)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
model:
  class_path: distpro_lightning.DistProModule
  init_args:
    student: resnet8
    teacher: {ckpt}
    teacher_model:
      class_path: distpro_lightning.models.resnet_cifar.CifarResNet
      init_args: {{depth: 14, num_classes: 10, in_channels: 1}}
    num_classes: 10
    in_channels: 1
    distillation: {{input_shape: [1, 8, 8], transforms: [conv_bn]}}
data:
  class_path: distpro_lightning.data.DigitsDataModule
  init_args: {{batch_size: 16, subset: 64}}
search:
  held_out:
    class_path: distpro_lightning.data.DigitsDataModule
    init_args: {{batch_size: 16, subset: 48, seed: 5}}
"""
    )
    cli = cli_main(
        ["--config", str(config), "--trainer.default_root_dir", str(tmp_path)], run=False
    )
    loaded = cli.model.teacher.state_dict()
    for k, v in teacher.state_dict().items():
        assert torch.equal(loaded[k], v), k
    search = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProcessSearchCallback))
    assert isinstance(search.held_out_source, DigitsDataModule)
    assert search.held_out_source.seed == 5


def test_export_round_trip_and_checkpoint_without_teacher(tmp_path):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = quiet_trainer(
        max_steps=2, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt]
    )
    trainer.fit(m, datamodule=DigitsDataModule(batch_size=16, subset=64))
    path = m.export_student(str(tmp_path / "student.pt"))
    x = torch.randn(5, 1, 8, 8)
    m.eval()
    expected = m.student(x)
    student = load_student(path)  # rebuilt by registry name: no teacher, no heads
    assert type(student).__name__ == "CifarResNet"
    assert torch.equal(student(x), expected)
    from_ckpt = load_student(tmp_path / "last.ckpt")  # the Lightning checkpoint itself
    assert torch.equal(from_ckpt(x), expected)
    assert sum(p.numel() for p in student.parameters()) == sum(
        p.numel() for p in m.student.parameters()
    )


class ManualModule(DistProModule):
    """The documented manual-optimization path: one optimizer step per batch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        loss = self.training_loss(batch).loss
        self.manual_backward(loss)
        opt.step()
        return loss


def _search_rows(module, steps=3):
    cb = ProcessSearchCallback(hypergradient="exact", output={"save_path": None})
    dm = DigitsDataModule(batch_size=16, subset=128, mode="search")
    torch.manual_seed(1)
    quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[cb]).fit(module, datamodule=dm)
    return cb.process.logits


def test_manual_optimization_searches_like_automatic():
    kwargs = dict(transforms=["conv_bn"], scheduler="none")
    torch.manual_seed(0)
    automatic = _search_rows(make_module(**kwargs))
    torch.manual_seed(0)
    manual = _search_rows(make_module(ManualModule, **kwargs))
    assert len(manual) == 3
    assert torch.allclose(manual, automatic, atol=1e-6)
    assert not torch.equal(manual[-1], manual[0])


def test_manual_optimization_without_a_step_is_refused():
    class NoStep(ManualModule):
        def training_step(self, batch, batch_idx):
            return None

    torch.manual_seed(0)
    m = NoStep(
        student="resnet8", teacher="resnet14", num_classes=10, in_channels=1,
        distillation={"input_shape": [1, 8, 8], "transforms": ["conv_bn"]},
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="exactly one optimizer step per"):
        _search_rows(m, steps=1)


class HparamsRecorder(Logger):
    """A logger that keeps every ``log_hyperparams`` call (what a run table would show)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.calls.append(dict(params))

    def log_metrics(self, metrics, step=None) -> None:
        pass


def _fit_own_module_with_loggers(tmp_path, callback_for):
    """A 2-step fit of the user's mixin module (no save_hyperparameters of its own) under a
    CSVLogger and a recording logger; returns the module, the calls and hparams.yaml."""
    torch.manual_seed(0)
    m = NetModule()
    assert not m.hparams  # the distillation settings are the mixin's to log
    recorder, csv = HparamsRecorder(), CSVLogger(tmp_path, name="own")
    quiet_trainer(
        max_steps=2, limit_val_batches=0, callbacks=[callback_for(m)], logger=[csv, recorder]
    ).fit(m, datamodule=PlainData())
    saved = yaml.safe_load((tmp_path / "own" / "version_0" / "hparams.yaml").read_text())
    return m, recorder.calls, saved


def _assert_distillation_group(group: dict, m: NetModule) -> None:
    assert group["transforms"] == ["conv_bn"]
    assert group["input_shape"] == [1, 8, 8]
    assert group["num_pathways"] == m.num_pathways == len(m.pathway_names) == 9
    assert group["normalization"] == m.distillation_config.normalization == "biased_softmax"
    assert "student_attribute" not in group


def test_mixin_module_search_logs_its_distillation_settings(tmp_path):
    search = ProcessSearchCallback(held_out="val_dataloader", output={"save_path": None})
    m, calls, saved = _fit_own_module_with_loggers(tmp_path, lambda m: search)
    logged = [c for c in calls if "search" in c]
    assert logged and all("distillation" in c for c in logged)
    _assert_distillation_group(logged[-1]["distillation"], m)
    _assert_distillation_group(saved["distillation"], m)
    assert saved["search"]["num_pathways"] == 9


@pytest.mark.parametrize("mode", ["final", "uniform"])
def test_mixin_module_replay_logs_its_distillation_settings(tmp_path, mode):
    def replay(m):
        if mode == "uniform":
            return ProcessScheduleCallback(mode="uniform", plot=False)
        norm = {"name": m.normalization, "bias": m.normalization_bias, "scale": m.weight_scale}
        process = DistillationProcess(m.pathway_names, norm, logits=torch.randn(4, 9))
        return ProcessScheduleCallback(process=process, mode=mode, plot=False)

    m, calls, saved = _fit_own_module_with_loggers(tmp_path, replay)
    logged = [c for c in calls if "replay" in c]
    assert len(logged) == 1 and logged[0]["replay"]["mode"] == mode
    _assert_distillation_group(logged[0]["distillation"], m)
    _assert_distillation_group(saved["distillation"], m)
    assert saved["replay"]["mode"] == mode and saved["replay"]["num_pathways"] == 9
