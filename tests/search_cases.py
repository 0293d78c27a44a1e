"""The search-side cases of issue 13 for ``tests/test_bad_inputs.py``: each function takes the
case's folder (which holds ``run.json``, the process file of run ``run-a``) and either raises
the error the row expects or checks the correct result itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import make_module, quiet_trainer
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
)

from distpro_lightning import (
    DistillationProcess,
    DistProMixin,
    ProcessScheduleCallback,
    ProcessSearchCallback,
)
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.grouping import split_flat
from distpro_lightning.search.heldout import HeldOutStream
from distpro_lightning.search.settings import FLAT_KEYS

ROOT = Path(__file__).resolve().parents[1]
RUN = "run.json"


def digits(**kw) -> DigitsDataModule:
    # 80 images: the search-validation split (a fifth, 16) holds one whole batch
    args = dict(batch_size=16, mode="search", subset=80, seed=0)
    args.update(kw)
    return DigitsDataModule(**args)


def callback(**kw) -> ProcessSearchCallback:
    """The search callback, its grouped settings named by their short names as the cases
    write them (``alpha_lr=0.1`` is ``alpha={"lr": 0.1}``, see ``FLAT_KEYS``)."""
    kw, groups = split_flat(kw, FLAT_KEYS)
    if isinstance(kw.get("hypergradient"), str):  # the method alone
        kw["hypergradient"] = {"method": kw["hypergradient"]}
    for group, values in groups.items():
        kw[group] = {**values, **(kw.get(group) or {})}  # an explicit group entry wins
    return ProcessSearchCallback(**kw)


def search(tmp: Path, steps: int = 2, module=None, dm=None, callbacks=(), before=(), **cb_kw):
    """A small search fit (``before``: callbacks whose hooks run before the search's);
    returns (callback, module, trainer)."""
    torch.manual_seed(0)
    module = module if module is not None else make_module(transforms=["conv_bn"])
    cb_kw.setdefault("plot", False)
    trainer_kw = dict(max_steps=steps, limit_val_batches=0, default_root_dir=tmp)
    trainer_kw.update(cb_kw.pop("trainer", {}))
    cb = cb_kw.pop("callback", None) or callback(**cb_kw)
    trainer = quiet_trainer(callbacks=[*before, cb, *callbacks], **trainer_kw)
    trainer.fit(module, datamodule=dm if dm is not None else digits())
    return cb, module, trainer


# --------------------------------------------------------------------------- output files
def save_path_checked_at_fit_start(bad: str, plot: bool = False):
    def act(tmp: Path) -> None:
        started = []

        class Spy(Callback):
            def on_train_batch_start(self, *args) -> None:
                started.append(1)

        try:
            search(tmp, save_path=bad.replace("TMP", str(tmp)), callbacks=[Spy()], plot=plot)
        finally:
            assert not started, "a step ran before the save path was refused"

    return act


def default_path_in_log_folder(tmp: Path) -> None:
    for version in (0, 1):  # a second run gets its own folder: nothing replaced
        cb, _, _ = search(tmp, trainer={"logger": CSVLogger(tmp)})
        expected = tmp / "lightning_logs" / f"version_{version}" / "process.json"
        assert cb.process_path == expected
        assert DistillationProcess.load(expected).run_id == cb.process.run_id
    cb, _, _ = search(tmp / "nolog")  # no logger: the default_root_dir
    assert cb.process_path == tmp / "nolog" / "process.json" and cb.process_path.is_file()


def plots_beside_process(tmp: Path) -> None:
    cb, _, _ = search(tmp, save_path=str(tmp / "s.json"), plot=True)
    assert (tmp / "s.png").stat().st_size > 1000
    assert (tmp / "s_heatmap.png").stat().st_size > 1000


class Interrupt(Callback):
    """Raises ``error`` at the start of optimizer step ``at`` (after the search step)."""

    def __init__(self, at: int, error: BaseException) -> None:
        self.at, self.error = at, error

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            raise self.error


def ctrl_c_saves(tmp: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT while shutting down
    try:
        with pytest.raises(SystemExit):
            search(
                tmp,
                steps=8,
                save_path=str(tmp / "s.json"),
                save_every_n_steps=0,
                save_every_epoch=False,
                callbacks=[Interrupt(3, KeyboardInterrupt())],
            )
    finally:
        signal.signal(signal.SIGINT, handler)
    saved = DistillationProcess.load(tmp / "s.json")
    assert len(saved) == 3  # steps 0-2; step 3's update never happened


def error_saves(tmp: Path) -> None:
    cb = ProcessSearchCallback(
        output={"save_path": str(tmp / "s.json"), "save_every_n_steps": 0, "plot": False}
    )
    with pytest.raises(RuntimeError, match="boom"):
        search(tmp, steps=8, callback=cb, callbacks=[Interrupt(2, RuntimeError("boom"))])
    assert torch.equal(DistillationProcess.load(tmp / "s.json").logits, cb.process.logits)
    assert len(cb.process) == 2


def kill_loses_at_most_an_epoch(tmp: Path) -> None:
    """``kill -9`` in the middle of a fit: the file holds every finished epoch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
    script = ROOT / "tests" / "scripts" / "search_until_killed.py"
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp / "s.json")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    done = 0
    deadline = time.time() + 300
    try:
        while done < 10:  # steps finished; 4 steps per epoch
            line = child.stdout.readline()
            assert line and time.time() < deadline, "the search never got going"
            done = int(line)
    finally:
        child.kill()
        child.wait()
    done = max([done, *(int(x) for x in child.stdout.read().split())])  # up to the kill
    saved = DistillationProcess.load(tmp / "s.json")
    assert len(saved) % 4 == 0 and done - 4 <= len(saved) <= done, (len(saved), done)


# --------------------------------------------------------------------------- non-finite steps
class StateAt(Callback):
    """The student's state (parameters and buffers) before and after optimizer step ``at``
    (before: ahead of the search step, whose training pass updates BatchNorm statistics)."""

    def __init__(self, at: int) -> None:
        self.at, self.before, self.after = at, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            self.before = {k: v.clone() for k, v in module.student.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at + 1:
            self.after = {k: v.clone() for k, v in module.student.state_dict().items()}


def nan_data(bad_batches: set[int], n_batches: int = 4, batch: int = 16) -> DigitsDataModule:
    dm = digits(subset=256)
    dm.setup("fit")
    x, y = next(iter(DataLoader(dm.train_dataset, batch_size=n_batches * batch)))
    for b in bad_batches:
        x[b * batch] = float("nan")  # one bad sample spoils its batch
    dm.train_dataloader = lambda: DataLoader(TensorDataset(x, y), batch_size=batch)
    return dm


def nan_batch_skipped(tmp: Path) -> None:
    state = StateAt(1)
    with pytest.warns(UserWarning, match="optimizer update was skipped"):
        cb, m, _ = search(
            tmp, steps=4, dm=nan_data({1}), save_path=str(tmp / "s.json"), before=[state]
        )
    assert cb.process.skipped_steps == [1]
    assert DistillationProcess.load(tmp / "s.json").skipped_steps == [1]
    for k, v in state.before.items():  # the NaN step changed nothing, BatchNorm included
        assert torch.equal(state.after[k], v), k
    assert all(torch.isfinite(v.float()).all() for v in m.student.state_dict().values())
    assert not torch.equal(cb.process.logits[3], cb.process.logits[2])  # the search goes on


def nan_run_stops(tmp: Path) -> None:
    cb = ProcessSearchCallback(
        output={"save_path": str(tmp / "s.json"), "plot": False},
        schedule={"max_non_finite_steps": 3},
    )
    try:
        with pytest.warns(UserWarning, match="non-finite hypergradient at step 0"):
            search(tmp, steps=8, dm=nan_data({0, 1, 2, 3}), callback=cb)
    finally:
        saved = DistillationProcess.load(tmp / "s.json")
        assert saved.skipped_steps == [0, 1, 2] and len(saved) == 3


# --------------------------------------------------------------------------- fits and resumes
def reused_callback_new_process(tmp: Path) -> None:
    cb = ProcessSearchCallback(output={"plot": False})
    search(tmp, steps=3, callback=cb, trainer={"logger": CSVLogger(tmp)})
    first_id, first_rows = cb.process.run_id, cb.process.logits.clone()
    search(tmp, steps=2, callback=cb, trainer={"logger": CSVLogger(tmp)})
    assert cb.process.run_id != first_id and len(cb.process) == 2
    first = DistillationProcess.load(tmp / "lightning_logs" / "version_0" / "process.json")
    assert first.run_id == first_id and torch.equal(first.logits, first_rows)  # kept


def reused_callback_fixed_path(tmp: Path) -> None:
    cb = ProcessSearchCallback(output={"save_path": str(tmp / "s.json"), "plot": False})
    search(tmp, callback=cb)
    search(tmp, callback=cb)  # a new run may not replace the first run's file


def resume_with(tmp: Path, data=digits, **changed) -> tuple[ProcessSearchCallback, list[str]]:
    ckpt = ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True)
    kw = dict(save_path=str(tmp / "s.json"), plot=False)
    first, _, _ = search(
        tmp, steps=2, dm=data(), callbacks=[ckpt], trainer={"enable_checkpointing": True}, **kw
    )
    cb = callback(**{**kw, **changed})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        trainer = quiet_trainer(
            max_steps=4, limit_val_batches=0, callbacks=[cb], default_root_dir=tmp
        )
        trainer.fit(
            make_module(transforms=["conv_bn"]),
            datamodule=data(),
            ckpt_path=str(tmp / "ckpt" / "last.ckpt"),
        )
    assert cb.process.run_id == first.process.run_id and len(cb.process) == 4
    return cb, [str(w.message) for w in seen]


def resume_keeps_skipped_steps(tmp: Path) -> None:
    with pytest.warns(UserWarning, match="non-finite hypergradient at step 1"):
        cb, messages = resume_with(tmp, data=lambda: nan_data({1}))
    # step 1 from the checkpoint; the resumed fit restarts the epoch's loader, so the NaN
    # batch (the second) comes again at step 3
    assert cb.process.skipped_steps == [1, 3]
    assert not any("other settings" in m for m in messages), messages
    saved = DistillationProcess.load(tmp / "s.json")
    assert saved.skipped_steps == [1, 3] and saved.run_id == cb.process.run_id
    assert "settings_changes" not in saved.provenance


def resume_other_alpha_lr(tmp: Path) -> None:
    cb, messages = resume_with(tmp, alpha_lr=0.1)
    assert any("alpha_lr: 0.05 -> 0.1" in m for m in messages), messages
    assert cb.step.alpha_optimizer.param_groups[0]["lr"] == 0.1  # applied, not the checkpoint's
    saved = DistillationProcess.load(tmp / "s.json").provenance
    assert saved["alpha_lr"] == 0.1 and saved["search_settings"]["alpha_lr"] == 0.1
    assert saved["settings_changes"] == [{"step": 2, "changed": {"alpha_lr": [0.05, 0.1]}}]


def resume_other_optimizer(tmp: Path) -> None:
    cb, messages = resume_with(tmp, alpha_optimizer="sgd", alpha_lr=50.0)
    assert any("starts afresh" in m for m in messages), messages
    assert isinstance(cb.step.alpha_optimizer, torch.optim.SGD)
    changes = DistillationProcess.load(tmp / "s.json").provenance["settings_changes"]
    assert changes[0]["changed"]["alpha_optimizer"] == ["adam", "sgd"]


# --------------------------------------------------------------------------- held-out loaders
class Indexed(Dataset):
    """Sample ``i`` is ``(tensor(i), 0)``."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        return torch.tensor(i), 0


def drawn(loader: DataLoader, n: int = 6) -> list[list[int]]:
    stream = HeldOutStream(loader, seed=0)
    return [stream.next_batch()[0].tolist() for _ in range(n)]


def held_out_sampler_kept(tmp: Path) -> None:
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(Indexed(), batch_size=4, sampler=SubsetRandomSampler(range(8), g))
    batches = drawn(loader)
    assert all(i < 8 for b in batches for i in b) and all(len(b) == 4 for b in batches)
    assert sorted(batches[0] + batches[1]) == list(range(8))  # one cycle = the subset


def held_out_batch_sampler_kept(tmp: Path) -> None:
    user = [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert drawn(DataLoader(Indexed(), batch_sampler=user), 4) == user + user
    sampler = BatchSampler(range(10), batch_size=3, drop_last=False)
    assert [len(b) for b in drawn(DataLoader(Indexed(), batch_sampler=sampler), 4)] == [3, 3, 3, 1]


def held_out_settings_kept(tmp: Path) -> None:
    def init(worker_id: int) -> None:
        torch.manual_seed(worker_id)

    loader = DataLoader(Indexed(), batch_size=4, pin_memory=True, worker_init_fn=init)
    stream = HeldOutStream(loader)
    assert stream.settings["pin_memory"] is True and stream.settings["worker_init_fn"] is init
    plain = drawn(DataLoader(Indexed(), batch_size=4, shuffle=False), 10)
    assert sorted(i for b in plain for i in b) == list(range(40))  # a seeded permutation


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.tensor(0), 0)])


class NoLen(Dataset):
    def __getitem__(self, i: int):
        return torch.tensor(i), 0


# --------------------------------------------------------------------------- modules
class HeadsForgotten(DistProMixin, LightningModule):
    """A mixin user whose optimizer holds only the student."""

    def __init__(self) -> None:
        super().__init__()
        self.student = make_module().student
        self.configure_distillation(
            make_module().teacher, transforms=["conv_bn"], input_shape=[1, 8, 8]
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, kd = self.distill(x)
        return self.task_loss(logits, y) + kd

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1)


def heads_missing(callback) -> object:
    def act(tmp: Path) -> None:
        quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[callback()]).fit(
            HeadsForgotten(), datamodule=digits()
        )

    return act


heads_missing_search = heads_missing(lambda: ProcessSearchCallback(output={"save_path": None}))
heads_missing_replay = heads_missing(lambda: ProcessScheduleCallback(mode="uniform"))


def two_weight_drivers(*callbacks) -> object:
    """A fit with ``callbacks`` (factories) that each set the pathway weights: a refusal
    comes at fit start, before any step; a fit that is not refused (``enabled=False``
    callbacks are left out of the check) runs its step."""

    def act(tmp: Path) -> None:
        module = make_module(transforms=["conv_bn"])
        before = module.alpha_logits.clone()
        cbs = [c() for c in callbacks]
        trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=cbs)
        try:
            trainer.fit(module, datamodule=digits())
        except RuntimeError:
            assert trainer.global_step == 0 and torch.equal(module.alpha_logits, before)
            raise
        assert trainer.global_step == 1

    return act


def search_cb() -> ProcessSearchCallback:
    return ProcessSearchCallback(output={"save_path": None})


def uniform_replay() -> ProcessScheduleCallback:
    return ProcessScheduleCallback(mode="uniform")


def same_student_and_teacher(tmp: Path) -> None:
    net = make_module().student
    make_module(student=net, teacher=net)


def shared_layers(tmp: Path) -> None:
    student = make_module().student
    teacher = nn.Sequential(student, nn.Identity())
    make_module(student=student, teacher=teacher, teacher_taps=["0.layer1"])


def dict_batch(tmp: Path) -> None:
    make_module().split_batch({"image": torch.zeros(2, 1, 8, 8), "label": torch.zeros(2)})


def tensor_batch(tmp: Path) -> None:
    make_module().split_batch(torch.zeros(2, 1, 8, 8))


def classifier_dict_batch(tmp: Path) -> None:
    from distpro_lightning import ClassifierModule

    module = ClassifierModule("resnet8", num_classes=10, in_channels=1)
    module.split_batch({"image": torch.zeros(2, 1, 8, 8), "label": torch.zeros(2)})


def training_channels(role: str):
    def act(tmp: Path) -> None:
        m, x = make_module(), torch.zeros(4, 3, 8, 8)
        m.teacher_outputs(x) if role == "teacher" else m.student_forward(x)

    return act


# --------------------------------------------------------------------------- extreme settings
def warns(match: str, **cb_kw):
    def act(tmp: Path) -> None:
        with pytest.warns(UserWarning, match=match):
            search(tmp, save_path=None, **cb_kw)

    return act


class DigitsStream(IterableDataset):
    """Two batches of the digits' training split, from a stream without ``len()``: the fit's
    length is unknown to Lightning (``estimated_stepping_batches`` is -1)."""

    def __iter__(self):
        dm = digits()
        dm.setup("fit")
        return iter([b for _, b in zip(range(2), dm.train_dataloader(), strict=False)])


def unknown_length_search(tmp: Path) -> None:
    """A search over a stream searches at every step and says nothing about the warm-up
    covering the fit (it said 'covers the whole fit (-1 optimizer steps)'); the process
    records its planned steps as unknown."""
    dm = digits()
    dm.setup("fit")
    cb = callback(save_path=None, held_out=dm.search_val_dataloader())
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[cb])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(
            make_module(transforms=["conv_bn"]), DataLoader(DigitsStream(), batch_size=None)
        )
    assert trainer.estimated_stepping_batches == -1 and len(cb.process) == 4
    assert not [str(w.message) for w in seen if "optimizer steps" in str(w.message)]
    assert cb.process.provenance["search_size"]["planned_steps"] is None
    assert not torch.equal(cb.process.logits[-1], cb.process.logits[0])  # alpha moved


def collapse_warned(tmp: Path) -> None:
    m = make_module(transforms=["conv_bn"])
    m.alpha_logits.fill_(-30.0)  # every weight ~e^-31 of its start: distillation off
    with pytest.warns(UserWarning, match="every pathway weight has fallen below"):
        search(
            tmp,
            module=m,
            save_path=None,
            warmup_steps=10,
            trainer={"max_epochs": 1, "max_steps": -1, "limit_train_batches": 2},
        )


def no_warning_at_defaults(tmp: Path) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        search(tmp, save_path=None)
    texts = [str(w.message) for w in seen]
    said = ("extreme", "rounding noise", "fallen below", "clips the real update")
    assert not [t for t in texts if any(s in t for s in said)]
