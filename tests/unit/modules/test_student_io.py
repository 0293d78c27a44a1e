"""``export_student`` refuses what it did not write, like every writer of the library."""

from __future__ import annotations

import pytest
from conftest import make_module

from distpro_lightning import load_student


def test_export_refuses_an_existing_file_unless_told(tmp_path):
    m = make_module(transforms=["conv_bn"])
    teacher = tmp_path / "teacher.ckpt"
    teacher.write_bytes(b"a teacher checkpoint")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        m.export_student(str(teacher))
    assert teacher.read_bytes() == b"a teacher checkpoint"
    m.export_student(str(teacher), overwrite=True)
    assert load_student(teacher).state_dict().keys() == m.student.state_dict().keys()


@pytest.mark.parametrize("bad, match", [("", "needs a file path"), (".", "is a folder")])
def test_export_to_no_file_says_what_to_give(tmp_path, monkeypatch, bad, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, IsADirectoryError), match=match):
        make_module(transforms=["conv_bn"]).export_student(bad)
    assert list(tmp_path.iterdir()) == []
