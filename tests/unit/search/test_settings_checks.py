"""Settings that make a search meaningless are refused or warned about, naming the
parameter and the fix (wrong types at construction; extreme values at fit start)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_module, quiet_trainer

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.search.checks import warn_extreme_settings
from distpro_lightning.search.settings import AlphaConfig


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha_lr": "0.1"}, "AlphaConfig.lr"),
        ({"epsilon": "0.01"}, "HypergradientConfig.epsilon"),
        ({"val_batches_per_step": 2.5}, "ScheduleConfig.val_batches_per_step"),
        ({"warmup_steps": True}, "ScheduleConfig.warmup_steps"),
    ],
)
def test_wrong_types_are_refused_at_construction_naming_the_parameter(kwargs, name):
    """Also through the deprecated flat keywords."""
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match=rf"{name} takes"):
        ProcessSearchCallback(**kwargs)


def test_a_huge_epsilon_warns():
    m = make_module(transforms=["conv_bn"])
    cb = ProcessSearchCallback(hypergradient={"epsilon": 100.0})
    with pytest.warns(UserWarning, match="epsilon=100 is large"):
        warn_extreme_settings(m, cb.settings)
    with warnings_none():
        warn_extreme_settings(m, ProcessSearchCallback().settings)


def test_sgd_alpha_lr_that_snaps_to_one_pathway_is_warned_before_and_after(tmp_path, recwarn):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    cb = ProcessSearchCallback(alpha={"lr": 1e30, "optimizer": "sgd"}, output={"save_path": None})
    dm = DigitsDataModule(batch_size=32, mode="search", subset=256, seed=0)
    quiet_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, callbacks=[cb]).fit(
        m, datamodule=dm
    )
    messages = [str(w.message) for w in recwarn]
    assert any("extreme for the SGD alpha optimizer" in t for t in messages)
    w = m.alpha_weights()
    assert float(w.max()) > 0.99 * float(w.sum())  # it did collapse to one-hot
    assert any("collapsed onto one pathway" in t for t in messages)


class warnings_none:
    """No warning inside the block."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        assert not [w for w in self.caught if issubclass(w.category, UserWarning)], [
            str(w.message) for w in self.caught
        ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output": {"overwrite": "no"}}, "OutputConfig.overwrite takes a bool"),
        ({"alpha": {"lr": "0.1"}}, "AlphaConfig.lr takes a float"),
        ({"schedule": {"every_n_steps": 2.5}}, "ScheduleConfig.every_n_steps takes an int"),
        ({"hypergradient": {"share_training_forward": 1}}, "share_training_forward takes a bool"),
        ({"alpha": {"rate": 0.1}}, "unknown keys \\['rate'\\]"),
        # issue 37, cases 11 and 15: flags outside the groups, sources of the wrong type
        ({"enabled": "false"}, r"enabled=...\) takes True or False, got str 'false'"),
        ({"held_out": 123}, r"held_out=...\) takes None .* got int 123"),
        ({"alpha": {"init_process": 5}}, r"AlphaConfig.init_process takes a str \| None, got int"),
    ],
)
def test_grouped_settings_refuse_wrong_types_naming_the_key(kwargs, message):
    with pytest.raises(TypeError, match=message):
        ProcessSearchCallback(**kwargs)


def test_flat_keywords_still_work_with_a_deprecation_naming_the_grouped_key():
    with pytest.warns(FutureWarning, match=r"alpha\.lr"):
        cb = ProcessSearchCallback(alpha_lr=0.2, save_path=None)
    assert cb.alpha.lr == 0.2 and cb.output.save_path is None
    with pytest.raises(TypeError, match="did you mean 'alpha_lr'"):
        ProcessSearchCallback(alpha_lrr=0.2)


@pytest.mark.parametrize(
    "kwargs, clash",
    [
        ({"alpha": {"lr": 0.05}, "alpha_lr": 0.1}, "alpha.lr=0.05 and alpha_lr=0.1"),
        ({"alpha": AlphaConfig(lr=0.05), "alpha_lr": 0.1}, "alpha.lr=0.05 and alpha_lr=0.1"),
        (
            {"output": {"save_path": "auto"}, "save_path": "x.json"},
            "output.save_path='auto' and save_path='x.json'",
        ),
    ],
)
def test_a_setting_given_in_its_group_and_flat_is_refused_even_at_its_default(kwargs, clash):
    """Issue 37, case 10: a group's value equal to the default was dropped for the flat one."""
    with pytest.raises(TypeError, match="got a setting twice") as info:
        ProcessSearchCallback(**kwargs)
    assert clash in str(info.value)


def _fit_search(module, tmp_path):
    cb = ProcessSearchCallback(output={"save_path": str(tmp_path / "p.json"), "plot": False})
    data = DigitsDataModule(batch_size=16, mode="search", subset=80, seed=0)
    quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[cb]).fit(module, datamodule=data)


def test_a_uniform_normalization_is_refused_by_the_search(tmp_path):
    """Its weights do not depend on alpha: the hypergradient would be 0 at every step."""
    module = make_module(transforms=["conv_bn"], normalization="uniform")
    with pytest.raises(ValueError, match="normalization='uniform' gives every pathway") as err:
        _fit_search(module, tmp_path)
    assert "ProcessScheduleCallback(mode='uniform')" in str(err.value)
    assert not (tmp_path / "p.json").exists()


def test_a_threshold_that_prunes_every_pathway_at_the_start_is_refused(tmp_path):
    """The logits start at 1: a threshold of 1 computes no pathway at all."""
    module = make_module(transforms=["conv_bn"], prune_threshold=1.0)
    assert not any(module.active_pathways())
    with pytest.raises(ValueError, match=r"prune_threshold=1 prunes every pathway") as err:
        _fit_search(module, tmp_path)
    assert "below 1 (the paper: 0.5)" in str(err.value)
    torch.manual_seed(0)
    _fit_search(make_module(transforms=["conv_bn"], prune_threshold=0.5), tmp_path)  # runs


def test_a_warm_up_as_long_as_the_fit_is_warned_about_at_fit_start(recwarn):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    start = m.alpha_logits.clone()
    cb = ProcessSearchCallback(schedule={"warmup_steps": 4}, output={"save_path": None})
    dm = DigitsDataModule(batch_size=32, mode="search", subset=256, seed=0)
    quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[cb]).fit(m, datamodule=dm)
    messages = [str(w.message) for w in recwarn]
    assert any(
        "search.schedule.warmup_steps=4 covers the whole fit (4 optimizer steps)" in t
        for t in messages
    )
    assert torch.equal(m.alpha_logits, start)  # indeed never moved


@pytest.mark.parametrize(("every", "warns"), [(5, True), (4, True), (3, False)])
def test_every_n_steps_that_leaves_one_update_in_the_fit_is_warned_about(every, warns, recwarn):
    """Issue 37, case 24: 4 steps searched every 5 (or 4) update alpha once, at step 0;
    every 3 updates it at steps 0 and 3."""
    from types import SimpleNamespace

    from distpro_lightning.search.checks import warn_if_never_searching

    run = ProcessSearchCallback(schedule={"every_n_steps": every}).run
    warn_if_never_searching(SimpleNamespace(estimated_stepping_batches=4), run)
    said = [str(w.message) for w in recwarn if "updates alpha once" in str(w.message)]
    assert bool(said) is warns
    if warns:
        assert said[0].startswith(
            f"search.schedule.every_n_steps={every} with a fit of 4 optimizer steps"
        )


def test_output_settings_without_a_process_file_are_said_to_have_no_effect():
    with pytest.warns(UserWarning, match=r"save_every_n_steps=5 has no effect with save_path=None"):
        ProcessSearchCallback(output={"save_path": None, "save_every_n_steps": 5})
    with warnings_none():
        ProcessSearchCallback(output={"save_path": None})


def test_a_step_factor_without_milestones_is_said_to_have_no_effect():
    from distpro_lightning import OptimizerConfig

    with pytest.warns(UserWarning, match=r"optimizer.gamma=0.5 has no effect with milestones=\(\)"):
        OptimizerConfig(gamma=0.5)
    with warnings_none():
        OptimizerConfig(gamma=0.5, milestones=[10])
