"""`distpro_lightning.files.folder_lock`: a check of a file and the write that depends on
it happen as one step for every writer that takes the lock (two fits on one save_path)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from conftest import make_module, quiet_trainer

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.files import folder_lock
from distpro_lightning.search import output


def test_a_second_holder_waits_until_the_first_releases_the_folder(tmp_path):
    inside = threading.Event()

    def second() -> None:
        with folder_lock(tmp_path):
            inside.set()

    with folder_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        assert not inside.wait(0.3)  # blocked while the first holds the lock
    thread.join(10)
    assert inside.is_set()  # and in once it is released


def test_a_holder_that_must_wait_is_told_once_and_one_that_need_not_is_not(tmp_path):
    waits = []
    with folder_lock(tmp_path, on_wait=lambda: waits.append("free")):
        pass
    inside = threading.Event()

    def second() -> None:
        with folder_lock(tmp_path, on_wait=lambda: waits.append("held")):
            inside.set()

    with folder_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        assert not inside.wait(0.3)
    thread.join(10)
    assert inside.is_set() and waits == ["held"]


def test_every_process_save_checks_and_writes_under_the_folder_lock(tmp_path, monkeypatch):
    events = []

    @contextmanager
    def recording_lock(folder):
        events.append(("lock", folder))
        yield
        events.append(("unlock", folder))

    real_divert = output.ProcessWriter._divert_if_taken
    monkeypatch.setattr(output, "folder_lock", recording_lock)
    monkeypatch.setattr(
        output.ProcessWriter,
        "_divert_if_taken",
        lambda self, process: events.append(("check", None)) or real_divert(self, process),
    )
    path = tmp_path / "out" / "p.json"
    cb = ProcessSearchCallback(output={"save_path": str(path), "plot": False})
    dm = DigitsDataModule(batch_size=32, mode="search", subset=160, seed=0)
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[cb]).fit(
        make_module(transforms=["conv_bn"]), datamodule=dm
    )
    assert path.is_file()
    saves = [i for i, e in enumerate(events) if e[0] == "check"]
    assert saves  # the final save at least
    for i in saves:  # each check sits between a lock and its unlock of the file's folder
        assert events[i - 1] == ("lock", path.parent) and events[i + 1] == ("unlock", path.parent)
