"""``export_student`` refuses what it did not write, like every writer of the library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_module

from distpro_lightning import DistillationProcess, load_student
from distpro_lightning.models import create
from distpro_lightning.modules.checkpoints import CheckpointError


def test_export_refuses_an_existing_file_unless_told(tmp_path):
    m = make_module(transforms=["conv_bn"])
    teacher = tmp_path / "teacher.ckpt"
    teacher.write_bytes(b"a teacher checkpoint")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        m.export_student(str(teacher))
    assert teacher.read_bytes() == b"a teacher checkpoint"
    with pytest.raises(TypeError, match=r"overwrite=...\) takes True or False, got str 'no'"):
        m.export_student(str(teacher), overwrite="no")  # issue 37, case 3: truthy string
    assert teacher.read_bytes() == b"a teacher checkpoint"
    m.export_student(str(teacher), overwrite=True)
    assert load_student(teacher).state_dict().keys() == m.student.state_dict().keys()


@pytest.mark.parametrize("bad, match", [("", "needs a file path"), (".", "is a folder")])
def test_export_to_no_file_says_what_to_give(tmp_path, monkeypatch, bad, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, IsADirectoryError), match=match):
        make_module(transforms=["conv_bn"]).export_student(bad)
    assert list(tmp_path.iterdir()) == []


def _process_json(path: Path) -> None:
    DistillationProcess(["a", "b"], {"name": "softmax"}, [[0.0, 1.0]]).save(path)


NOT_A_STUDENT = {
    "plain dict": lambda p: torch.save({"epoch": 3, "lr": 0.1}, p),
    "tensor": lambda p: torch.save(torch.zeros(3), p),
    "bare state dict": lambda p: torch.save(create("resnet8", num_classes=10).state_dict(), p),
    "state_dict not a dict": lambda p: torch.save({"state_dict": [1, 2]}, p),
    "export without weights": lambda p: torch.save({"format": "distpro-student"}, p),
    "process JSON": _process_json,
}


@pytest.mark.parametrize("kind", sorted(NOT_A_STUDENT))
def test_load_student_of_a_file_without_student_weights_names_the_file_and_the_kinds(
    tmp_path, kind
):
    path = tmp_path / ("file.json" if kind == "process JSON" else "file.pt")
    NOT_A_STUDENT[kind](path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        load_student(path, model=create("resnet8", num_classes=10))
    message = str(info.value)
    assert "\n" not in message and repr(str(path)) in message
    assert "export_student()" in message and "Lightning checkpoint (.ckpt)" in message
    assert path.read_bytes() == before
