"""``distpro process`` never turns a process file into a figure."""

from __future__ import annotations

import pytest
import torch

from distpro_lightning import DistillationProcess
from distpro_lightning.cli.main import process_main

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


def test_export_onto_a_folder_names_the_fix(tmp_path):
    source = tmp_path / "p.json"
    _process(source)
    with pytest.raises(IsADirectoryError, match="give a file path inside it"):
        process_main(["export", str(source), "--steps", "5", "-o", str(tmp_path)])
