"""The modules' grouped settings refuse out-of-range values at construction by their key
(``optimizer.lr``, ``distillation.kd_weight``), and say which given values have no effect."""

from __future__ import annotations

import pytest

from distpro_lightning import DistillationConfig, OptimizerConfig


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lr": 0.0}, r"optimizer\.lr must be a finite number > 0, got 0\.0"),
        ({"lr": -1.0}, r"optimizer\.lr must be a finite number > 0"),
        ({"momentum": 1.5}, r"optimizer\.momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, r"optimizer\.weight_decay must be a finite number >= 0"),
        ({"gamma": 0.0}, r"optimizer\.gamma must be a finite number > 0"),
        ({"milestones": [10, -5]}, r"optimizer\.milestones must be positive epoch numbers"),
        ({"nesterov": True, "momentum": 0.0}, r"nesterov=True needs optimizer\.name='sgd'"),
        ({"nesterov": True, "name": "adam"}, r"nesterov=True needs optimizer\.name='sgd'"),
    ],
)
def test_optimizer_values_out_of_range_are_refused_by_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kd_weight": 0.0}, r"distillation\.kd_weight must be a finite number > 0 \(a student"),
        ({"kd_weight": -1.0}, r"distillation\.kd_weight must be"),
        ({"kd_temperature": 0.0}, r"distillation\.kd_temperature must be a finite number > 0"),
        ({"prune_threshold": float("nan")}, r"distillation\.prune_threshold must be None or"),
        ({"input_shape": [1, -1, 8]}, r"distillation\.input_shape must be None or positive"),
    ],
)
def test_distillation_values_out_of_range_are_refused_by_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(**kwargs)


@pytest.mark.parametrize(
    "kind,kwargs,message",
    [
        (OptimizerConfig, {"name": "adam", "momentum": 0.5}, r"optimizer\.momentum=0\.5 has no"),
        (OptimizerConfig, {"scheduler": "cosine", "milestones": [3]}, r"milestones=\(3,\) has"),
        (OptimizerConfig, {"scheduler": "none", "gamma": 0.5}, r"optimizer\.gamma=0\.5 has no"),
        (
            DistillationConfig,
            {"normalization": "softmax", "normalization_bias": 0.5},
            r"normalization_bias=0\.5 has no effect with normalization='softmax'",
        ),
        (DistillationConfig, {"kd_temperature": 2.0}, r"kd_temperature=2\.0 has no effect"),
    ],
)
def test_given_values_without_effect_are_said(kind, kwargs, message):
    with pytest.warns(UserWarning, match=message):
        kind(**kwargs)


def test_defaults_and_used_values_are_quiet(recwarn):
    OptimizerConfig()
    OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine")
    OptimizerConfig(milestones=[5, 10], gamma=0.2)
    DistillationConfig(response_kd=True, kd_temperature=2.0)
    DistillationConfig(normalization="biased_softmax", normalization_bias=0.5)
    assert not [w for w in recwarn if "has no effect" in str(w.message)]
