"""The search's logging follows the Trainer: steps and values against Lightning's cadence
(CSVLogger), epoch aggregates, summaries, figures in the log directory, hyperparameters, the
W&B artifact."""

from __future__ import annotations

import csv
import math
import re
import warnings

import pytest
import search_cases as sc
import torch
from conftest import make_module, quiet_trainer
from lightning.pytorch.loggers import CSVLogger

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.process.weights import weight_summary


def _rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def _fit(tmp_path, every: int, steps: int | None = None, epochs: int = 1, **cb_kwargs):
    torch.manual_seed(0)
    module = make_module(transforms=["conv_bn"], prune_threshold=0.9)
    cb = sc.callback(**cb_kwargs, output={"save_path": str(tmp_path / "p.json")}, alpha={"lr": 0.5})
    seen: dict[int, float] = {}
    log = cb.logger.log

    def recording_log(mod, record):  # the values of each step, as the step computed them
        if record.val_loss is not None:
            seen[record.step] = float(record.val_loss)
        log(mod, record)

    cb.logger.log = recording_log
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(
        max_steps=steps or -1,
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[cb],
        logger=logger,
        log_every_n_steps=every,
    )
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32, mode="search", subset=320))
    return module, cb, trainer, logger, seen


@pytest.mark.parametrize("every", [1, 3])
def test_step_metrics_follow_the_trainers_cadence_with_current_values(tmp_path, every):
    _, _, trainer, logger, seen = _fit(tmp_path, every, epochs=1)
    steps = trainer.global_step  # 8 batches of 32 in the 256-sample training part
    rows = _rows(logger)
    search = {
        int(r["step"]): float(r["search/val_loss_step"]) for r in rows if r["search/val_loss_step"]
    }
    train = {int(r["step"]) for r in rows if r.get("train/loss")}
    # the module's own train/loss and the search metrics reach the logger at the same steps
    assert set(search) == train
    assert sorted(search) == [s for s in range(steps) if (s + 1) % every == 0]
    for step, value in search.items():  # each the value computed at that very step
        assert value == pytest.approx(seen[step], rel=1e-6)
    assert len(set(search.values())) == len(search)  # no value repeated


def test_three_step_run_logs_the_epoch_held_out_loss(tmp_path):
    _, _, _, logger, seen = _fit(tmp_path, every=50, steps=3)
    rows = _rows(logger)
    assert not any(r.get("search/val_loss_step") for r in rows)  # cadence 50: no step rows
    epoch = [float(r["search/val_loss"]) for r in rows if r.get("search/val_loss")]
    assert epoch == [pytest.approx(sum(seen.values()) / 3, rel=1e-6)]  # the epoch mean


def test_summaries_per_pathway_option_progress_bar_and_figures(tmp_path):
    module, cb, trainer, logger, _ = _fit(tmp_path, every=1, steps=4, log_pathways=False)
    rows = _rows(logger)
    keys = set(rows[0])
    assert {"search/active_pathways", "search/weight_entropy", "search/top3_share"} <= keys
    assert not any(k.startswith("alpha_weight/") for k in keys)
    last = [r for r in rows if r["search/weight_entropy"]][-1]
    w = module.alpha_weights().detach().double()
    p = w / w.sum()
    assert float(last["search/weight_entropy"]) == pytest.approx(float(-(p * p.log()).sum()))
    active = int((module.alpha_logits > 0.9).sum())
    assert float(last["search/active_pathways"]) == active
    assert not {"search_val", "eff_paths"} & keys  # progress bar only
    for kind in ("lines", "heatmap"):  # CSV takes no images: PNGs in its log directory
        png = f"figures/search_process_{kind}_epoch000.png"
        assert (tmp_path / "run" / "version_0" / png).stat().st_size > 1000
    import yaml

    hparams = yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())
    search = hparams["search"]  # the grouped names of the docs, the YAML and sweeps
    assert search["alpha"]["lr"] == 0.5 and search["alpha"]["betas"] == [0.5, 0.999]
    assert search["hypergradient"]["method"] == "finite_difference"
    assert search["schedule"]["every_n_steps"] == cb.schedule.every_n_steps
    assert not {"alpha_lr", "hypergradient_method", "every_n_steps"} & set(search)
    # the logger and the process file record the same: requested and in force
    in_force = cb.process.provenance["share_training_forward_in_force"]
    assert search["share_training_forward_in_force"] is in_force


def test_weight_summary_against_hand_computation():
    s = weight_summary(torch.tensor([3.0, 1.0, 0.0, 4.0]), ["a", "b", "c", "d"], [1, 1, 0, 1])
    p = [0.375, 0.125, 0.5]
    entropy = -sum(x * math.log(x) for x in p)
    assert s.entropy == pytest.approx(entropy)
    assert s.effective == pytest.approx(math.exp(entropy))
    assert s.active == 3
    assert [n for n, _ in s.top] == ["d", "a", "b"] and s.top_share == pytest.approx(1.0)
    uniform = weight_summary(torch.ones(5), list("abcde"))
    assert uniform.effective == pytest.approx(5.0) and uniform.active == 5


def test_removed_interval_arguments_are_refused_naming_the_replacement():
    with pytest.raises(TypeError, match=r"Trainer\(log_every_n_steps"):
        ProcessSearchCallback(log_every_n_steps=5)
    with pytest.raises(TypeError, match="log_pathways_every_n_steps"):
        make_module(log_pathways_every_n_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert ProcessSearchCallback().output.log_pathways


def test_csv_figures_keep_one_file_per_epoch_readable_by_others(tmp_path):
    """Per-epoch figures in figures/ (a history for CSV users, no overwrites), the final
    plots beside the process file, every file with an ordinary file's permissions."""
    import os

    from lightning.pytorch.loggers import CSVLogger

    from distpro_lightning import ProcessSearchCallback
    from distpro_lightning.data import DigitsDataModule

    old = os.umask(0o022)
    try:
        torch.manual_seed(0)
        m = make_module(transforms=["conv_bn"])
        cb = ProcessSearchCallback(output={"save_path": "{log_dir}/process.json"})
        dm = DigitsDataModule(batch_size=32, mode="search", subset=160, seed=0)
        trainer = quiet_trainer(
            max_epochs=2, limit_val_batches=0, callbacks=[cb], logger=CSVLogger(tmp_path)
        )
        trainer.fit(m, datamodule=dm)
    finally:
        os.umask(old)
    run = tmp_path / "lightning_logs" / "version_0"
    history = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert history == sorted(
        f"search_process_{kind}_epoch{e:03d}.png" for e in (0, 1) for kind in ("heatmap", "lines")
    )
    pngs = [*run.rglob("*.png")]
    assert {p.name for p in run.glob("*.png")} == {"process.png", "process_heatmap.png"}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in [*pngs, run / "process.json"])


def test_progress_bar_only_values_stay_out_of_callback_metrics():
    """``search_val`` and ``eff_paths`` reach the progress bar through its ``get_metrics``
    during the fit, never ``trainer.callback_metrics`` (nor a logger); the bar gets its own
    ``get_metrics`` back afterwards."""
    from lightning.pytorch import Callback

    shown: list[dict] = []

    class Peek(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            shown.append(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    search = ProcessSearchCallback(output={"save_path": None}, alpha={"lr": 0.5})
    trainer = quiet_trainer(
        max_steps=3, limit_val_batches=0, enable_progress_bar=True, callbacks=[search, Peek()]
    )
    trainer.fit(
        make_module(transforms=["conv_bn"]),
        datamodule=DigitsDataModule(batch_size=32, mode="search", subset=160),
    )
    assert {"search_val", "eff_paths", "train/loss"} <= set(shown[-1])
    assert 0 < shown[-1]["eff_paths"] <= 9  # the effective number of the 9 pathways
    assert not {"search_val", "eff_paths"} & set(trainer.callback_metrics)
    assert "get_metrics" not in vars(trainer.progress_bar_callback)


STATUS = re.compile(
    r"^DistPro search, epoch 0: held-out loss \d+\.\d{4}, active pathways \d+/9, effective "
    r"\d+\.\d, top: "
)


@pytest.mark.parametrize("with_bar", [True, False])
def test_epoch_status_line_goes_above_the_bar_or_to_the_log(monkeypatch, with_bar):
    """The epoch-end status line is printed through the progress bar's ``print`` (above the
    bars, not into the tqdm line) when there is a bar, through ``rank_zero_info`` (the
    log) without one; never both."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from distpro_lightning.search import reporting

    printed: list[str] = []
    logged: list[str] = []

    class RecordingBar(TQDMProgressBar):
        def print(self, *args, **kwargs):
            printed.append(" ".join(map(str, args)))

    monkeypatch.setattr(reporting, "rank_zero_info", lambda msg, *a, **k: logged.append(msg))
    search = ProcessSearchCallback(output={"save_path": None}, alpha={"lr": 0.5})
    callbacks = [search, RecordingBar()] if with_bar else [search]
    trainer = quiet_trainer(
        max_epochs=1, limit_val_batches=0, enable_progress_bar=with_bar, callbacks=callbacks
    )
    trainer.fit(
        make_module(transforms=["conv_bn"]),
        datamodule=DigitsDataModule(
            batch_size=32, mode="search", subset=128, search_val_fraction=0.25
        ),
    )
    assert (trainer.progress_bar_callback is not None) == with_bar
    status = [m for m in printed + logged if m.startswith("DistPro search, epoch")]
    assert len(status) == 1 and STATUS.match(status[0]), status
    assert status[0] in (printed if with_bar else logged)
    assert status[0] not in (logged if with_bar else printed)
