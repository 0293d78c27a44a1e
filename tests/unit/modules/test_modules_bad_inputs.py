"""Bad or unusual modules, teachers, checkpoints, taps and batches: the error each must give,
or the right result, and that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import search_cases as sc  # noqa: E402
from bad_inputs import (  # noqa: E402
    Case,
    check_case,
    mlp,
    module,
)
from torch import nn  # noqa: E402

from distpro_lightning.baselines.reviewkd import ReviewKDModule  # noqa: E402
from distpro_lightning.models import create  # noqa: E402
from distpro_lightning.modules.checkpoints import load_state_file, resolve_teacher  # noqa: E402
from distpro_lightning.pathways.taps import TapError, explained_input_errors, probe_shapes  # noqa: E402

TEACHER_TYPO = ("does not exist", "teachr.ckpt")


def corrupt(data: bytes, name: str = "t.ckpt") -> Callable[[Path], object]:
    def act(tmp: Path) -> object:
        (tmp / name).write_bytes(data)
        return load_state_file(tmp / name)

    return act


def truncated_checkpoint(tmp: Path) -> object:
    torch.save({"w": torch.ones(64)}, tmp / "full.pt")
    raw = (tmp / "full.pt").read_bytes()
    return corrupt(raw[: len(raw) // 2])(tmp)


def pickled_object(tmp: Path) -> object:
    import argparse

    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp / "obj.pt")
    return load_state_file(tmp / "obj.pt")


def mixin_without_input_shape(tmp: Path) -> object:
    from lightning.pytorch import LightningModule

    from distpro_lightning import DistProMixin

    class User(DistProMixin, LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.student = mlp()
            self.configure_distillation(mlp(), student_taps=["1"], teacher_taps=["1"])

    return User()


def forward_of_other_channels(tmp: Path) -> object:
    model, x = create("resnet8", 10, in_channels=3), torch.zeros(2, 1, 8, 8)
    with explained_input_errors("student", model, x):
        return model(x)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))


CASES = [
    Case(
        "teacher path typo",
        lambda t: resolve_teacher(str(t / "teachr.ckpt")),
        FileNotFoundError,
        ("does not exist", "teachr.ckpt"),
        ("Unknown model",),
    ),
    Case("teacher directory", lambda t: resolve_teacher(str(t)), IsADirectoryError, ("directory",)),
    Case("garbage checkpoint", corrupt(b"not a checkpoint"), ValueError, ("is not a checkpoint",)),
    Case("empty checkpoint", corrupt(b""), ValueError, ("is not a checkpoint", "empty")),
    Case("truncated checkpoint", truncated_checkpoint, ValueError, ("damaged",)),
    Case("JSON as checkpoint", corrupt(b'{"a": 1}', "t.pt"), ValueError, ("not a checkpoint",)),
    Case("pickled object", pickled_object, ValueError, ("argparse.Namespace", "never unpickles")),
    Case(
        "fc -> fc taps",
        module(
            student=mlp(), teacher=mlp(), student_taps=["1"], teacher_taps=["1"], input_shape=[784]
        ),
        ValueError,
        ("'1->1:conv_bn'", "1-D features", "feature maps (C, H, W)", "response_kd=True"),
        ("matching kinds",),
    ),
    Case(
        "MLP student, default input shape",
        module(student=mlp(), student_taps=["1"], input_shape=None),
        ValueError,
        ("student (Sequential)", "(2, 1, 32, 32)", "no Conv2d", "pass input_shape"),
    ),
    Case(
        "MLP student, automatic taps",
        module(student=mlp(), input_shape=None),
        ValueError,
        ("(Sequential)", "no Conv2d", "pass input_shape"),
    ),
    Case(
        "mixin MLP without input_shape",
        mixin_without_input_shape,
        ValueError,
        ("pass input_shape",),
    ),
    Case(
        "teacher of other channels",
        module(teacher=create("resnet14", 10, in_channels=3), teacher_taps=["layer1"]),
        ValueError,
        ("teacher (", "(2, 1, 8, 8)", "3 channels", "in_channels"),
    ),
    Case(
        "data of other channels in training",
        forward_of_other_channels,
        ValueError,
        ("student (", "(2, 1, 8, 8)", "3 channels"),
    ),
    Case(
        "tap errors are not input errors",
        lambda t: probe_shapes(Twice(), ["block"], torch.zeros(2, 1, 4, 4), "student"),
        TapError,
        ("fired twice",),
        ("input_shape",),
    ),
    Case(
        "same module as student and teacher",
        sc.same_student_and_teacher,
        ValueError,
        ("the same nn.Module", "freeze the student"),
    ),
    Case(
        "teacher sharing the student's layers",
        sc.shared_layers,
        ValueError,
        ("shares parameters", "conv1"),
    ),
    Case(
        "dict batch",
        sc.dict_batch,
        TypeError,
        ("['image', 'label']", "split_batch(self, batch)", "Override"),
    ),
    Case("tensor batch", sc.tensor_batch, TypeError, ("Tensor", "split_batch")),
    Case(
        "dict batch to a classifier (the same rule as the distilling modules)",
        sc.classifier_dict_batch,
        TypeError,
        ("['image', 'label']", "ClassifierModule.split_batch(self, batch)", "Override"),
    ),
    Case(
        "teacher of other channels in training",
        sc.training_channels("teacher"),
        ValueError,
        ("teacher (CifarResNet)", "(4, 3, 8, 8)", "1 channels", "in_channels"),
    ),
    Case(
        "student of other channels in training",
        sc.training_channels("student"),
        ValueError,
        ("student (CifarResNet)", "(4, 3, 8, 8)", "1 channels", "in_channels"),
    ),
    Case(
        "DistProModule: teacher path typo",
        lambda t: sc.make_module(teacher=str(t / "teachr.ckpt")),
        FileNotFoundError,
        TEACHER_TYPO,
        ("Unknown model",),
    ),
    Case(
        "ReviewKDModule: teacher path typo",
        lambda t: ReviewKDModule(student="resnet8", teacher=str(t / "teachr.ckpt")),
        FileNotFoundError,
        TEACHER_TYPO,
        ("Unknown model",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_teacher_model_with_a_teacher_name_is_said_to_have_no_effect(caplog):
    import logging

    from distpro_lightning.models import create

    with caplog.at_level(logging.WARNING, logger="distpro_lightning"):
        teacher = resolve_teacher("resnet14", "resnet20", num_classes=10, in_channels=1)
    built = create("resnet14", num_classes=10, in_channels=1)  # the name's architecture
    assert [p.shape for p in teacher.parameters()] == [p.shape for p in built.parameters()]
    said = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert said == [
        "DistPro: teacher_model='resnet20' has no effect with teacher='resnet14', a model name "
        "(the name is the architecture); teacher_model names the architecture of a checkpoint "
        "file."
    ]


def test_teacher_model_with_a_module_teacher_is_said_to_have_no_effect(caplog):
    import logging

    from distpro_lightning.models import create
    from distpro_lightning.modules.teacher import build_teacher

    module = create("resnet14", num_classes=10, in_channels=1)
    with caplog.at_level(logging.WARNING, logger="distpro_lightning"):
        teacher = build_teacher(module, 10, 1, "resnet20")
        quiet = build_teacher(module, 10, 1, None)
    assert teacher is module and quiet is module
    said = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert said == [
        "DistPro: teacher_model='resnet20' has no effect with teacher=CifarResNet, a module "
        "(the module is the teacher, weights and all); teacher_model names the architecture "
        "of a checkpoint file. Drop teacher_model."
    ]


def test_feature_settings_without_feature_pathways_are_said_to_have_no_effect(recwarn):
    from distpro_lightning import DistillationConfig

    DistillationConfig(
        connections="none", response_kd=True, transforms=["conv_bn"], distance="mse",
        student_taps=["layer1"],
    )  # fmt: skip
    said = sorted(str(w.message) for w in recwarn if "has no effect" in str(w.message))
    assert said == [
        "distillation.distance=mse has no effect with connections='none' (no feature "
        "pathways; the review pathway uses HCL).",
        "distillation.student_taps=['layer1'] has no effect with connections='none' (no "
        "feature pathways and review_kd=False: no feature is tapped).",
        "distillation.transforms=['conv_bn'] has no effect with connections='none' (no "
        "feature pathways).",
    ]
    recwarn.clear()
    DistillationConfig(connections="none", review_kd=True, student_taps=["layer1"])
    assert not [w for w in recwarn if "has no effect" in str(w.message)]  # the review reads them
