"""The process file's writer: no search is lost when two fits share a save_path, a reused
callback resolves ``{log_dir}`` for each fit, and a mistyped placeholder is refused."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import make_module, quiet_trainer
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger

from distpro_lightning import DistillationProcess, ProcessSearchCallback
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.search.paths import OutputPathError

NORM = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}


class Intruder(Callback):
    """Another search writing the same file after this fit's start check (a second job
    launched with the same config)."""

    def __init__(self, path, pathway_names) -> None:
        self.path, self.names = path, pathway_names
        self.written: str | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1 and self.written is None:
            other = DistillationProcess(self.names, NORM, run_id="other-run")
            other.append(torch.zeros(len(self.names)))
            other.save(self.path)
            self.written = self.path.read_text()


def _fit(tmp_path, callbacks, steps=4, logger=False):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    dm = DigitsDataModule(batch_size=32, mode="search", subset=256, seed=0)
    trainer = quiet_trainer(
        max_steps=steps, limit_val_batches=0, callbacks=callbacks, logger=logger,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(m, datamodule=dm)
    return m


def test_a_second_fit_on_the_same_save_path_keeps_both_processes(tmp_path):
    path = tmp_path / "process.json"
    search = ProcessSearchCallback(
        output={"save_path": str(path), "save_every_n_steps": 2, "plot": False}
    )
    m = make_module(transforms=["conv_bn"])
    intruder = Intruder(path, m.pathway_names)
    with pytest.warns(UserWarning, match="two fits share one save_path"):
        _fit(tmp_path, [search, intruder])
    assert path.read_text() == intruder.written  # the other search's file is untouched
    ours = path.with_name(f"process.{search.process.run_id}.json")
    assert search.process_path == ours
    saved = DistillationProcess.load(ours)
    assert len(saved) == 4 and saved.run_id == search.process.run_id


def test_a_diverted_run_resumes_in_its_own_file(tmp_path):
    """Issue 37, case 22: resuming the diverted run with its unchanged config was refused
    ("resume it from its checkpoint", which it was); it continues in its own file."""
    path = tmp_path / "process.json"
    output = {"save_path": str(path), "save_every_n_steps": 2, "plot": False}
    search = ProcessSearchCallback(output=output)
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    intruder = Intruder(path, m.pathway_names)
    dm = DigitsDataModule(batch_size=32, mode="search", subset=256, seed=0)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[search, intruder])
    with pytest.warns(UserWarning, match="a resume of this run from its checkpoint continues"):
        trainer.fit(m, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ours, run_id = search.process_path, search.process.run_id
    assert ours == path.with_name(f"process.{run_id}.json")
    before = path.read_text()
    resumed = ProcessSearchCallback(output=output)  # the run's unchanged config
    quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[resumed]).fit(
        m, datamodule=dm, ckpt_path=tmp_path / "a.ckpt"
    )
    assert resumed.process_path == ours and resumed.process.run_id == run_id
    saved = DistillationProcess.load(ours)
    assert saved.run_id == run_id and len(saved) == 4
    assert path.read_text() == before  # the other search's file is still untouched


def test_reused_callback_resolves_log_dir_for_each_fit(tmp_path):
    search = ProcessSearchCallback(
        output={"save_path": "{log_dir}/p.json", "plot": False, "overwrite": True}
    )
    _fit(tmp_path, [search], logger=CSVLogger(tmp_path, name="runs"))
    first = tmp_path / "runs" / "version_0" / "p.json"
    before = first.read_text()
    _fit(tmp_path, [search], logger=CSVLogger(tmp_path, name="runs"))
    second = tmp_path / "runs" / "version_1" / "p.json"
    assert search.process_path == second and second.is_file()
    assert first.read_text() == before  # the first run's process was not replaced
    assert json.loads(second.read_text())["run_id"] != json.loads(before)["run_id"]


def test_mistyped_placeholder_is_refused_before_anything_is_written(tmp_path):
    search = ProcessSearchCallback(output={"save_path": str(tmp_path / "{LOG_DIR}" / "p.json")})
    with (
        pytest.raises(OutputPathError, match=r"\{LOG_DIR\}.*the only placeholder is"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        _fit(tmp_path, [search])
    assert not (tmp_path / "{LOG_DIR}").exists()


def test_fast_dev_run_writes_no_process_file_or_figure(tmp_path):
    search = ProcessSearchCallback(output={"save_path": str(tmp_path / "out" / "p.json")})
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    dm = DigitsDataModule(batch_size=32, mode="search", subset=256, seed=0)
    quiet_trainer(fast_dev_run=2, callbacks=[search], default_root_dir=tmp_path).fit(m, dm)
    assert len(search.process) == 2  # it searched
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.png"))


def test_provenance_records_the_global_seed_without_a_seeded_data_module(tmp_path):
    from lightning.pytorch import seed_everything
    from torch.utils.data import DataLoader, TensorDataset

    seed_everything(7)
    m = make_module(transforms=["conv_bn"])
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    cb = ProcessSearchCallback(output={"save_path": None})
    cb.search_val_loader = DataLoader(data, batch_size=8)
    quiet_trainer(max_steps=1, callbacks=[cb]).fit(m, DataLoader(data, batch_size=8))
    assert cb.process.provenance["seed"] == 7


def test_a_usual_val_dataloader_larger_than_its_split_is_the_meta_batch(tmp_path):
    """batch 128 over 64 images: the search uses the 64 as its held-out batch, warned."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    train = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    val = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    cb = ProcessSearchCallback(output={"save_path": None})
    cb.search_val_loader = DataLoader(val, batch_size=128)
    with pytest.warns(UserWarning, match="uses all 64 per rank as its held-out"):
        quiet_trainer(max_steps=2, callbacks=[cb]).fit(m, DataLoader(train, batch_size=16))
    assert len(cb.process) == 2 and cb.held_out.batch_size == 64
