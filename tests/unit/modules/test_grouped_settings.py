"""The modules' grouped settings (``distillation``, ``optimizer``): objects, dicts and YAML's
nested keys build the same module; hyper-parameters hold the groups as plain dicts that
load with ``weights_only=True``; version 0.1's flat keywords still work with one
deprecation naming the new keys; unknown and mistyped settings are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from distpro_lightning import ClassifierModule, DistillationConfig, DistProModule, OptimizerConfig
from distpro_lightning.cli.main import cli_main
from distpro_lightning.data import DigitsDataModule

ROOT = Path(__file__).resolve().parents[3]
PAIR = dict(student="resnet8", teacher="resnet14", num_classes=10, in_channels=1)
SMALL = {"input_shape": [1, 8, 8], "transforms": ["conv_bn"]}


def test_objects_and_dicts_build_the_same_module():
    torch.manual_seed(0)
    a = DistProModule(
        **PAIR,
        distillation=DistillationConfig(input_shape=[1, 8, 8], transforms=["conv_bn"]),
        optimizer=OptimizerConfig(name="adamw", lr=0.01),
    )
    b = DistProModule(**PAIR, distillation=SMALL, optimizer={"name": "adamw", "lr": 0.01})
    assert a.pathway_names == b.pathway_names and len(a.pathway_names) == 9
    assert dict(a.hparams) == dict(b.hparams)
    assert a.hparams["optimizer"]["name"] == "adamw" and a.hparams["distillation"][
        "transforms"
    ] == ["conv_bn"]
    assert isinstance(a.configure_optimizers()["optimizer"], torch.optim.AdamW)


def test_flat_keywords_work_with_one_deprecation_naming_the_grouped_keys():
    with pytest.warns(FutureWarning) as seen:
        m = DistProModule(
            **PAIR, input_shape=[1, 8, 8], transforms=["conv_bn"], lr=0.2, optimizer="adam"
        )
    messages = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    assert len(messages) == 1
    for key in ("distillation.transforms", "distillation.input_shape", "optimizer.lr"):
        assert key in messages[0]
    assert m.num_pathways == 9 and m.optimizer_config.lr == 0.2
    assert m.optimizer_config.name == "adam"
    assert "transforms" not in m.hparams and "lr" not in m.hparams  # only the groups
    assert m.hparams["distillation"]["transforms"] == ["conv_bn"]
    assert m.hparams["optimizer"]["lr"] == 0.2


def test_classifier_flat_lr_is_its_optimizer_group():
    with pytest.warns(FutureWarning, match=r"optimizer\.lr"):
        c = ClassifierModule("resnet8", 10, 1, lr=0.3)
    assert c.optimizer_config.lr == 0.3 and c.hparams["optimizer"]["lr"] == 0.3
    assert ClassifierModule("resnet8", 10, 1).optimizer_config.lr == 0.1  # its own default


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"transfroms": ["conv_bn"]},
            "unknown arguments 'transfroms' (did you mean 'transforms'?)",
        ),
        ({"distillation": {"transfroms": ["conv_bn"]}}, "unknown keys ['transfroms']"),
        ({"distillation": {"kd_weight": "1"}}, "DistillationConfig.kd_weight takes a float"),
        ({"optimizer": {"lr": "0.1"}}, "OptimizerConfig.lr takes a float"),
        ({"optimizer": {"name": "lion"}}, "Unknown optimizer 'lion' (optimizer.name)"),
        ({"distillation": 3}, "takes a DistillationConfig or a dict of its fields"),
        # issue 37: case 11 ("no" is truthy), case 16 (a string is a sequence of letters)
        ({"distillation": {"fused_heads": "no"}}, "fused_heads takes a bool | None, got str"),
        (
            {"distillation": {"transforms": "conv_bn"}},
            "takes a list of transform kinds, got the string 'conv_bn': write "
            "transforms=['conv_bn']",
        ),
        (
            {"distillation": {"kd_weight": 1.0}, "kd_weight": 2.0},
            "distillation.kd_weight=1.0 and kd_weight=2.0",
        ),
    ],
)
def test_unknown_and_mistyped_settings_are_refused_by_name(kwargs, message):
    with pytest.raises((TypeError, ValueError)) as info:
        DistProModule(**PAIR, **kwargs)
    assert message in str(info.value)


def test_checkpoint_hparams_load_with_weights_only_and_rebuild_the_groups(tmp_path):
    torch.manual_seed(0)
    m = DistProModule(**PAIR, distillation={**SMALL, "kd_weight": 2.0}, optimizer={"lr": 0.02})
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = quiet_trainer(max_steps=1, callbacks=[ckpt], enable_checkpointing=True)
    trainer.fit(m, DigitsDataModule(batch_size=16, subset=64))
    raw = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["distillation"]["kd_weight"] == 2.0
    back = DistProModule.load_from_checkpoint(tmp_path / "last.ckpt")
    assert back.distillation_config.kd_weight == 2.0 and back.optimizer_config.lr == 0.02
    assert back.pathway_names == m.pathway_names


def test_a_second_config_overrides_part_of_a_group(tmp_path, monkeypatch):
    """A pair file that sets only ``distillation.transforms`` keeps the base config's other
    distillation settings (prune threshold, input shape) and its optimizer group."""
    monkeypatch.chdir(tmp_path)
    override = {"model": {"init_args": {"distillation": {"transforms": ["conv_bn"]}}}}
    cli = cli_main(
        ["--config", str(ROOT / "examples" / "fashion_mnist" / "search.yaml"),
         "--config", json.dumps(override), "--model.init_args.teacher", "resnet20",
         "--trainer.logger", "false", "--trainer.max_steps", "1"],
        run=False,
    )  # fmt: skip
    config = cli.model.distillation_config
    assert list(config.transforms) == ["conv_bn"] and config.prune_threshold == 0.5
    assert config.response_kd and config.review_kd  # the base config's, kept
    assert list(config.input_shape) == [1, 28, 28] and cli.model.num_pathways == 11
    assert cli.model.optimizer_config.scheduler == "cosine"


@pytest.mark.parametrize("given", [["=null"], [" null"]], ids=["equals", "spaced"])
def test_a_group_field_set_to_null_on_the_command_line(tmp_path, monkeypatch, given):
    """``--model.init_args.distillation.prune_threshold=null`` (jsonargparse alone refuses
    ``null`` for a dataclass field under ``class_path``) sets just that field."""
    monkeypatch.chdir(tmp_path)
    key = "--model.init_args.distillation.prune_threshold"
    arg = (key + given[0]).split(" ")
    cli = cli_main(
        ["--config", str(ROOT / "examples" / "fashion_mnist" / "search.yaml"), *arg,
         "--model.init_args.teacher", "resnet20", "--trainer.logger", "false"],
        run=False,
    )  # fmt: skip
    assert cli.model.prune_threshold is None
    assert list(cli.model.distillation_config.input_shape) == [1, 28, 28]  # the rest kept
