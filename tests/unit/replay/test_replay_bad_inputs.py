"""Bad or unusual inputs of the replay: the error each must give, or the right result, and
that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import search_cases as sc  # noqa: E402
from bad_inputs import (  # noqa: E402
    RUN,
    Case,
    check_case,
    module,
)

from distpro_lightning import DistillationProcess, ProcessScheduleCallback  # noqa: E402


def scale_warning(tmp: Path) -> None:
    m = module(transforms=["conv_bn"], connections=[(0, 0), (1, 1)])(tmp)
    p = DistillationProcess(m.pathway_names, {"name": "biased_softmax", "scale": 5.0}, [[0, 0]])
    fix = r"weight scale 5 but the module .* by 2: .* as in the search or kd_weight=2.5,"
    assert m.kd_weight_for_scale(5.0) == 5.0 / m.num_pathways
    with pytest.warns(UserWarning, match=fix):
        ProcessScheduleCallback(process=p).check(m)
    p2 = DistillationProcess(m.pathway_names, {"name": "biased_softmax", "scale": 2.0}, [[0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(ProcessScheduleCallback(process=p2).check(m).logits, p2.logits)
    # the kd_weight the warning names, as printed, silences it (1/3 is not exact in 6 digits)
    three = module(transforms=["conv_bn"], connections=[(0, 0), (1, 1), (2, 2)])(tmp)
    p3 = DistillationProcess(
        three.pathway_names, {"name": "biased_softmax", "scale": 1.0}, [[0] * 3]
    )
    with pytest.warns(UserWarning, match=r"or kd_weight=(\S+),") as caught:
        ProcessScheduleCallback(process=p3).check(three)
    printed = float(re.search(r"kd_weight=(\S+),", str(caught[0].message)).group(1))
    fixed = module(transforms=["conv_bn"], connections=[(0, 0), (1, 1), (2, 2)], kd_weight=printed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProcessScheduleCallback(process=p3).check(fixed(tmp))


def check_without_trainer(tmp: Path) -> object:
    m = module()(tmp)  # 9 pathways; the run's file has 2
    return ProcessScheduleCallback(process=str(tmp / RUN)).check(m)


CASES = [
    Case(
        "replay a directory",
        lambda tmp: ProcessScheduleCallback(process=str(tmp)),
        IsADirectoryError,
        ("is a directory",),
    ),
    Case("scale differs: warning", scale_warning),
    Case(
        "check(module) without a Trainer",
        check_without_trainer,
        ValueError,
        ("does not match the module's pathways", "layer3->layer3:conv_bn"),
    ),
    Case(
        "replay: heads not in the optimizer",
        sc.heads_missing_replay,
        RuntimeError,
        ("ProcessScheduleCallback", "heads.", "never train"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
