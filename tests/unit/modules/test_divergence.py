"""A diverging distilled run says so once (`DivergenceWatch`, `DivergenceWarning`)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import make_module, quiet_trainer

from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.modules.divergence import DivergenceWarning, DivergenceWatch


def test_threshold_is_factor_times_the_loss_of_a_uniform_guess():
    watch = DivergenceWatch(num_classes=10, factor=5.0)
    uniform_guess = torch.nn.functional.cross_entropy(torch.zeros(1, 10), torch.tensor([3]))
    assert watch.threshold == pytest.approx(5.0 * float(uniform_guess))


def test_peak_is_kept_across_steps_and_warned_once_until_reset():
    watch = DivergenceWatch(num_classes=10)
    for value in (2.3, 30.0, 1.0):  # the peak (30 > 11.5) survives the later, lower step
        watch.update(torch.tensor(value))
    assert float(watch.peak) == 30.0
    message = watch.message(step=7, remedy="Lower it.")
    assert message is not None and "30 by step 7" in message and "11.5" in message
    assert "Lower it." in message and "docs/troubleshooting.md" in message
    assert watch.message(step=8, remedy="Lower it.") is None  # once per fit
    watch.reset()
    assert watch.peak is None and watch.message(step=0, remedy="") is None
    # a non-finite task loss is a bad batch (a NaN input the search skips), not logits that
    # grew: it neither warns nor hides a later divergence
    for value in (float("nan"), float("inf"), 3.0):
        watch.update(torch.tensor(value))
    assert float(watch.peak) == 3.0 and watch.message(step=1, remedy="") is None
    watch.update(torch.tensor(40.0))
    assert watch.message(step=2, remedy="") is not None


def test_below_the_threshold_nothing_is_said():
    watch = DivergenceWatch(num_classes=100)  # 5 x ln(100) = 23.0
    watch.update(torch.tensor(20.0))
    assert watch.message(step=3, remedy="") is None and not watch.warned


@pytest.mark.parametrize(("classes", "factor"), [(1, 5.0), (10, 0.0), (10, float("nan"))])
def test_bad_settings_are_refused(classes, factor):
    with pytest.raises(ValueError, match="num_classes >= 2 and factor > 0"):
        DivergenceWatch(classes, factor)


def _fit(module, epochs=1, **trainer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = quiet_trainer(max_epochs=epochs, limit_val_batches=0, **trainer)
        fit.fit(module, datamodule=DigitsDataModule(batch_size=32, subset=128))
    return [str(w.message) for w in caught if issubclass(w.category, DivergenceWarning)]


def test_a_diverging_distpro_run_warns_once_per_fit_with_the_remedy():
    torch.manual_seed(0)
    module = make_module(kd_weight=200.0, lr=0.5)  # the distillation term swamps the task
    said = _fit(module, epochs=2)
    assert len(said) == 1, said
    assert said[0].startswith("DistProModule: The student's task loss reached")
    assert "distillation.kd_weight" in said[0] and "optimizer.lr" in said[0]
    assert float(module.divergence_watch.peak) > 5 * math.log(10)
    assert len(_fit(module)) == 1  # a second fit of the same module is watched anew


def test_a_healthy_run_says_nothing():
    torch.manual_seed(0)
    module = make_module()
    assert _fit(module) == []
    assert float(module.divergence_watch.peak) < 5 * math.log(10)


def test_the_logging_cadence_reads_the_peak_before_the_epoch_ends():
    torch.manual_seed(0)
    module = make_module(kd_weight=200.0, lr=0.5)
    said = _fit(module, log_every_n_steps=1, max_steps=3)  # an epoch is 4 steps: not ended
    assert len(said) == 1 and "by step " in said[0]


def test_without_step_logging_the_epoch_end_reads_the_peak():
    torch.manual_seed(0)
    module = make_module(kd_weight=200.0, lr=0.5)
    assert len(_fit(module, log_every_n_steps=0)) == 1  # Lightning's "no step logging"


def test_reviewkd_is_watched_with_its_own_remedy():
    torch.manual_seed(0)
    module = ReviewKDModule(
        student="resnet8", teacher="resnet14", num_classes=10, in_channels=1,
        input_shape=[1, 8, 8], mid_channels=16, review_weight=1.0, optimizer={"lr": 5.0},
    )  # fmt: skip
    said = _fit(module, epochs=2)
    assert len(said) == 1 and said[0].startswith("ReviewKDModule:")
    assert "review_weight" in said[0] and "warmup_epochs" in said[0]


def test_the_watch_does_not_cost_a_host_synchronisation_per_step():
    watch = DivergenceWatch(num_classes=10)
    watch.update(torch.tensor(1.0))
    peak = watch.peak
    watch.update(torch.tensor(0.5))
    # the peak stays a tensor (no .item() per step); only `message` reads it
    assert isinstance(watch.peak, torch.Tensor) and peak is not watch.peak


def test_a_search_that_reuses_the_training_gradient_is_watched_too(tmp_path):
    from distpro_lightning import ProcessSearchCallback

    torch.manual_seed(0)
    module = make_module(kd_weight=200.0, lr=0.5)
    search = ProcessSearchCallback(
        hypergradient={"reuse_training_gradient": True},
        output={"save_path": str(tmp_path / "p.json"), "plot": False},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[search])
        fit.fit(module, datamodule=DigitsDataModule(batch_size=32, subset=128, mode="search"))
    said = [str(w.message) for w in caught if issubclass(w.category, DivergenceWarning)]
    assert len(said) == 1 and said[0].startswith("DistProModule:")
    assert "train/task_loss" in fit.callback_metrics
