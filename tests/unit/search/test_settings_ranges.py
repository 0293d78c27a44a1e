"""The search's grouped settings refuse out-of-range values at construction, naming the full
key (``search.alpha.lr``), and say when a value they take has no effect."""

from __future__ import annotations

import pytest

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.search.settings import (
    AlphaConfig,
    HypergradientConfig,
    OutputConfig,
    ScheduleConfig,
)


@pytest.mark.parametrize(
    "kind,kwargs,message",
    [
        (AlphaConfig, {"lr": 0.0}, "search.alpha.lr must be a finite number > 0, got 0.0"),
        (AlphaConfig, {"lr": float("inf")}, "search.alpha.lr must be a finite number > 0"),
        (AlphaConfig, {"betas": (0.9, 1.5)}, "search.alpha.betas must be two numbers in"),
        (AlphaConfig, {"weight_decay": -1.0}, "search.alpha.weight_decay must be a finite"),
        (AlphaConfig, {"optimizer": "rmsprop"}, "search.alpha.optimizer must be 'adam' or"),
        (HypergradientConfig, {"method": "first_order"}, "search.hypergradient.method must"),
        (HypergradientConfig, {"epsilon": -1e-2}, "search.hypergradient.epsilon must be a"),
        (ScheduleConfig, {"every_n_steps": 0}, "search.schedule.every_n_steps must be >= 1"),
        (ScheduleConfig, {"warmup_steps": -1}, "search.schedule.warmup_steps must be >= 0"),
        (ScheduleConfig, {"val_batches_per_step": 0}, "val_batches_per_step must be >= 1"),
        (ScheduleConfig, {"max_non_finite_steps": -1}, "max_non_finite_steps must be >= 0"),
        (OutputConfig, {"save_every_n_steps": -5}, "search.output.save_every_n_steps must be"),
    ],
)
def test_out_of_range_values_are_refused_by_their_full_key(kind, kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        kind(**kwargs)


def test_the_callback_refuses_them_from_a_dict_too():
    with pytest.raises(ValueError, match=r"search\.schedule\.every_n_steps must be >= 1"):
        ProcessSearchCallback(schedule={"every_n_steps": 0})


def test_diagnostics_that_never_meet_a_searched_step_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="never meets a searched step") as err:
        ScheduleConfig(warmup_steps=1, every_n_steps=2, diagnostics_every_n_steps=2)
    assert "alpha is updated at steps 1, 3, 5" in str(err.value)
    assert "diagnostics_every_n_steps=2, warmup_steps=0" in str(err.value)
    # a warm-up the diagnostics can meet: steps 3, 5, 7, ... and multiples of 3 meet at 3, 9
    assert ScheduleConfig(warmup_steps=3, every_n_steps=2, diagnostics_every_n_steps=3)
    assert ScheduleConfig(every_n_steps=4, diagnostics_every_n_steps=6)  # every 12th step


def test_values_without_effect_are_said():
    with pytest.warns(UserWarning, match=r"search\.alpha\.betas=\(0\.9, 0\.99\) has no effect"):
        AlphaConfig(optimizer="sgd", betas=(0.9, 0.99))
    with pytest.warns(UserWarning, match=r"epsilon=0\.1 has no effect with method='exact'"):
        HypergradientConfig(method="exact", epsilon=0.1)
