"""Each method of a comparison is built from the pair's module with the library's own
builders, at its grid point: the module, its settings and the weights it applies."""

from __future__ import annotations

import pytest
import torch
from own_project import SmallCNN

from distpro_lightning import (
    ClassifierModule,
    DistillationProcess,
    DistProModule,
    ProcessScheduleCallback,
)
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.compare.methods import FixedWeights, MethodInputs, build, fixed_shares
from distpro_lightning.compare.pair import Pair
from distpro_lightning.modules.config import DistillationConfig


def template(seed: int = 0) -> DistProModule:
    pair = Pair(
        model=lambda: DistProModule(
            student=SmallCNN(), teacher=SmallCNN(width=12), num_classes=10,
            distillation=DistillationConfig(transforms=["conv_bn"], response_kd=True,
                                            review_kd=True, input_shape=[1, 8, 8]),
        ),
        data=lambda seed, search: None,
    )  # fmt: skip
    return pair.template(seed)


def test_the_seed_fixes_the_initial_student_for_every_method():
    a, b, c = template(3), template(3), template(4)
    same = all(
        torch.equal(x, y)
        for x, y in zip(a.student.state_dict().values(), b.student.state_dict().values())
    )
    other = all(
        torch.equal(x, y)
        for x, y in zip(a.student.state_dict().values(), c.student.state_dict().values())
    )
    assert same and not other


def test_the_baselines_take_their_grid_point():
    t = template()
    student, _ = build("student", MethodInputs(t, {}))
    assert isinstance(student, ClassifierModule) and student.model is t.student
    kd, callbacks = build("hinton_kd", MethodInputs(template(), {"w": 2.0, "T": 3.0}))
    assert list(kd.pathway_names) == ["logits->logits:kd"] and callbacks == []
    assert (kd.kd_weight, kd.kd_temperature, kd.normalization) == (2.0, 3.0, "uniform")
    t = template()
    review, _ = build("reviewkd", MethodInputs(t, {"w": 0.5, "warm": 0.25}, epochs=8))
    assert isinstance(review, ReviewKDModule) and review.review_weight == 0.5
    assert review.warmup_epochs == pytest.approx(2.0)
    assert review.student is t.student


def test_equal_and_fixed_weights_apply_their_weights_over_the_space():
    equal, callbacks = build("equal", MethodInputs(template(), {"w": 0.5}))
    assert equal.kd_weight == 0.5 and len(equal.pathway_names) == 11
    assert isinstance(callbacks[0], ProcessScheduleCallback) and callbacks[0].mode == "uniform"
    fixed, callbacks = build("fixed", MethodInputs(template(), {"w": 2.0, "f": 0.8}))
    assert isinstance(callbacks[0], FixedWeights)
    callbacks[0].on_fit_start(None, fixed)
    shares = torch.tensor(fixed_shares(list(fixed.pathway_names), 0.8))
    assert torch.allclose(fixed.alpha_weights(), shares * fixed.weight_scale)
    assert float(fixed.alpha_weights().sum()) == pytest.approx(2.0 * 11)  # w x P pathways
    features = [n for n in fixed.pathway_names if n.endswith(":conv_bn")]
    assert len(features) == 9 and float(shares[: len(features)].sum()) == pytest.approx(0.8)


def test_the_replays_use_the_process_in_their_mode(tmp_path):
    t = template()
    rows = torch.linspace(0.0, 2.0, 3)[:, None] * torch.ones(3, t.num_pathways)
    scale = {"name": "biased_softmax", "bias": 1.0, "scale": float(t.num_pathways)}
    DistillationProcess(t.pathway_names, scale, rows).save(tmp_path / "p.json")
    path = str(tmp_path / "p.json")
    for method, mode in (("alpha_T", "final"), ("distpro", "process"), ("transfer", "process")):
        module, (replay,) = build(method, MethodInputs(template(), {}, process=path))
        assert isinstance(module, DistProModule) and replay.mode == mode
    with pytest.raises(ValueError, match="no builder"):
        build("distpro", MethodInputs(template(), {}))
