"""The bad-input table's shared parts: a `Case` (an action, the error it must raise and the
text it must and must not say) and `check_case`, which runs it in a folder holding one
good process file of run ``run-a`` and asserts that nothing was lost: the file is
unchanged, byte for byte, and still loads. The cases live with the tests of their unit
(``test_*_bad_inputs.py``)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import nn

from distpro_lightning import DistillationProcess
from distpro_lightning.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "examples" / "fashion_mnist"
RUN = "run.json"  # every case starts with this process file of run "run-a" in its folder
NAMES = ["layer1->layer1:conv_bn", "layer2->layer2:conv_bn"]


def good_process(run_id: str | None = "run-a") -> DistillationProcess:
    return DistillationProcess(
        NAMES,
        {"name": "biased_softmax", "bias": 1.0, "scale": 2.0},
        [[0.0, 1.0], [0.5, 0.25], [1.0, -1.0]],
        steps_per_epoch=3,
        provenance={"created": "2025-01-01T00:00:00+00:00"},
        run_id=run_id,
    )


def edited(tmp: Path, **fields) -> Path:
    """The run's file with some fields replaced (``None`` deletes), as ``bad.json``."""
    data = json.loads((tmp / RUN).read_text())
    for key, value in fields.items():
        if value is None:
            data.pop(key)
        elif key in ("bias", "scale"):
            data["normalization"][key] = value
        else:
            data[key] = value
    out = tmp / "bad.json"
    out.write_text(json.dumps(data))
    return out


def load_edited(**fields) -> Callable[[Path], object]:
    return lambda tmp: DistillationProcess.load(edited(tmp, **fields))


def distpro(*argv: str) -> tuple[int, str]:
    """Run the ``distpro`` entry point; its exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, err.getvalue()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def module(**kw) -> Callable[[Path], object]:
    from conftest import make_module

    args = {"transforms": ["conv_bn"], **kw}
    return lambda tmp: make_module(**args)


@dataclass
class Case:
    id: str
    act: Callable[[Path], object]
    error: type[BaseException] | None = None
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ("weights_only=False", "weights_only` set to `False")


def check_case(case: Case, tmp_path: Path) -> None:
    """Run ``case`` beside the good process file; check the error and that nothing was lost."""
    good_process().save(tmp_path / RUN)
    before = (tmp_path / RUN).read_bytes()
    if case.error is None:
        case.act(tmp_path)
    else:
        with pytest.raises(case.error) as info:
            case.act(tmp_path)
        text = str(info.value)
        for fragment in case.says:
            assert fragment in text, f"{fragment!r} not in {text!r}"
        for fragment in case.never_says:
            assert fragment not in text, text
        if case.error is not SystemExit and info.value.__cause__ is not None:
            for fragment in case.never_says:
                assert fragment not in str(info.value.__cause__)
    # Nothing lost: the run's file is untouched and loads.
    assert (tmp_path / RUN).read_bytes() == before
    assert DistillationProcess.load(tmp_path / RUN).run_id == "run-a"
