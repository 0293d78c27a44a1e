"""``distpro process`` never turns a process file into a figure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distpro_lightning import DistillationProcess
from distpro_lightning.cli.main import main, process_main

NORM = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}


def _process(path):
    p = DistillationProcess(["a->b:conv_bn", "a->c:conv_bn"], NORM)
    for _ in range(3):
        p.append(torch.rand(2))
    p.save(path)
    return path.read_bytes()


def test_plot_refuses_to_replace_the_process_file_or_any_non_png(tmp_path):
    named_png = tmp_path / "X.png"  # a process exported under a .png name
    before = _process(named_png)
    with pytest.raises(FileExistsError, match="would replace the process file"):
        process_main(["plot", str(named_png), "--kind", "lines"])
    assert named_png.read_bytes() == before
    other = tmp_path / "notes.png"
    other.write_text("not a figure")
    with pytest.raises(FileExistsError, match="not a PNG figure"):
        process_main(["plot", str(named_png), "-o", str(other)])
    assert other.read_text() == "not a figure"
    process_main(["plot", str(named_png), "-o", str(tmp_path / "fig.png")])
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    process_main(["plot", str(named_png), "-o", str(tmp_path / "fig.png")])  # a plot: replaced


def test_plot_replaces_its_own_earlier_figure_of_another_format(tmp_path):
    """``-o fig.pdf`` wrote a PDF, then refused to replace it ("not a PNG figure")."""
    source = tmp_path / "p.json"
    _process(source)
    for name, magic in (("fig.pdf", b"%PDF-"), ("fig.svg", b"<?xml")):
        for _ in range(2):  # the second plot replaces the first
            process_main(["plot", str(source), "-o", str(tmp_path / name), "--kind", "lines"])
        assert (tmp_path / name).read_bytes().startswith(magic)
    notes = tmp_path / "notes.pdf"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match="exists and is not a PDF figure"):
        process_main(["plot", str(source), "-o", str(notes)])
    assert notes.read_text() == "my notes"


def test_export_onto_a_folder_names_the_fix(tmp_path):
    source = tmp_path / "p.json"
    _process(source)
    with pytest.raises(IsADirectoryError, match="give a file path inside it"):
        process_main(["export", str(source), "--steps", "5", "-o", str(tmp_path)])


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder nothing can be written in (root writes everywhere but in ``/sys``)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
        pytest.skip("no read-only folder for root here")
    return Path("/sys")


OUTPUTS = {
    "unwritable folder": lambda tmp: str(_unwritable_folder(tmp) / "out.json"),
    "under a file": lambda tmp: str(tmp / "p.json" / "out.json"),
    "a folder path with /": lambda tmp: f"{tmp / 'new'}/",
    "a pipe": lambda tmp: (os.mkfifo(tmp / "pipe"), str(tmp / "pipe"))[1],
}
FIXES = {
    "unwritable folder": "cannot be written: cannot write in the folder",
    "under a file": "is a file, so the folder",
    "a folder path with /": "is a directory: give a file path inside it",
    "a pipe": "exists and is not a regular file: give the path of a file",
}


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_export_to_an_unwritable_output_names_that_path_and_the_fix(tmp_path, capsys, case):
    source = tmp_path / "p.json"
    before = _process(source)
    output = OUTPUTS[case](tmp_path)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as info:
        main(["process", "export", str(source), "--steps", "5", "-o", output, "--overwrite"])
    error = capsys.readouterr().err
    assert info.value.code == 1 and error.count("\n") == 1
    assert f"-o {output!r}" in error and FIXES[case] in error and ".tmp" not in error
    assert source.read_bytes() == before and sorted(os.listdir(tmp_path)) == listing


@pytest.mark.parametrize("action", ["export", "average"])
def test_export_and_average_name_the_problem_with_an_unwritable_output(tmp_path, capsys, action):
    source = tmp_path / "p.json"
    _process(source)
    output = OUTPUTS["under a file"](tmp_path)
    extra = ["--steps", "5"] if action == "export" else []
    with pytest.raises(SystemExit) as info:
        main(["process", action, str(source), *extra, "-o", output])
    error = capsys.readouterr().err
    assert info.value.code == 1 and error.count("\n") == 1
    assert f"distpro process {action}: -o {output!r}" in error and FIXES["under a file"] in error
    assert error.startswith(f"error: distpro process {action}: ")  # the command named once


def test_average_of_processes_of_two_spaces_says_which_differs_and_writes_nothing(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _process(a)
    other = DistillationProcess(["a->b:conv_bn", "a->d:conv_bn"], NORM, logits=[[0.0, 1.0]] * 3)
    other.save(b)
    with pytest.raises(SystemExit) as info:
        main(["process", "average", str(a), str(b), "-o", str(tmp_path / "mean.json")])
    error = capsys.readouterr().err
    assert info.value.code == 1 and "process 1 differs from process 0 in its pathways" in error
    assert not (tmp_path / "mean.json").exists()
