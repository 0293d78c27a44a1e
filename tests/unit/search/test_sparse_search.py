"""Sparse search (``search_every_n_steps``) and proxy searches: alpha is updated every k-th
step with the same hypergradient as the dense search, held in between; the file keeps the
true step axis and records what was searched; a stretched replay warns unless recorded."""

from __future__ import annotations

import copy

import pytest
import search_cases as sc
import torch
from conftest import make_module, quiet_trainer

from distpro_lightning import DistillationProcess, ProcessScheduleCallback, ProcessSearchCallback
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.search import step as step_module


def _search(tmp_path, steps=6, **kw):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    cb = sc.callback(**kw, output={"save_path": str(tmp_path / "p.json"), "plot": False})
    dm = DigitsDataModule(batch_size=32, mode="search", subset=512, seed=0)
    quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[cb]).fit(m, datamodule=dm)
    return cb


def test_every_step_is_the_default_bit_for_bit(tmp_path):
    a = _search(tmp_path / "a")
    b = _search(tmp_path / "b", search_every_n_steps=1)
    assert torch.equal(a.process.logits, b.process.logits)
    assert a.process.searched_steps() == list(range(6))


def test_sparse_search_updates_every_kth_step_and_holds_in_between(tmp_path, monkeypatch):
    calls = []
    real = step_module.compute_hypergradient
    monkeypatch.setattr(
        step_module, "compute_hypergradient", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    dense = _search(tmp_path / "dense", steps=7)
    calls.clear()
    sparse = _search(tmp_path / "sparse", steps=7, search_every_n_steps=3, warmup_steps=1)
    rows = sparse.process.logits
    assert len(rows) == 7  # one row per optimizer step: the true step axis
    assert len(calls) == 2  # steps 1 and 4 searched; 0 (warm-up), 2, 3, 5, 6 held
    assert sparse.process.searched_steps() == [1, 4]
    for t in (2, 3):
        assert torch.equal(rows[t], rows[1])
    assert not torch.equal(rows[1], rows[0]) and not torch.equal(rows[4], rows[3])
    saved = DistillationProcess.load(tmp_path / "sparse" / "p.json")
    assert saved.provenance["run_settings"]["search_every_n_steps"] == 3
    assert saved.searched_steps() == [1, 4]
    # the first searched step sees the same state as the dense search's step 1 would after
    # a held step 0 — so compare the one step both take from the same state: step 0.
    with pytest.warns(UserWarning, match="every_n_steps=5 with a fit of 1 optimizer steps"):
        first = _search(tmp_path / "first", steps=1, search_every_n_steps=5)
    assert torch.equal(first.process.logits[0], dense.process.logits[0])


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2"])
def test_search_every_n_steps_is_checked(bad):
    with pytest.raises((ValueError, TypeError), match="every_n_steps"):
        ProcessSearchCallback(schedule={"every_n_steps": bad})


@pytest.mark.parametrize("proxy", [False, True])
def test_replay_stretching_a_process_warns_unless_it_was_a_proxy(tmp_path, proxy, recwarn):
    cb = _search(tmp_path, steps=2, proxy=proxy)
    assert cb.process.provenance["search_size"]["planned_steps"] == 2
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    replay = ProcessScheduleCallback(process=str(tmp_path / "p.json"), plot=False)
    dm = DigitsDataModule(batch_size=32, mode="retrain", subset=512, seed=0)
    quiet_trainer(max_steps=12, limit_val_batches=0, callbacks=[replay]).fit(m, datamodule=dm)
    stretched = [w for w in recwarn if "stretches a process of 2 steps" in str(w.message)]
    assert len(stretched) == (0 if proxy else 1)


def test_a_sparse_searched_step_after_held_steps_has_the_dense_steps_hypergradient(
    tmp_path, monkeypatch
):
    """At a searched step t > 0 of a sparse search (k = 3: steps 0 and 3), the hypergradient
    is the one a dense search step computes from the same state (weights, alpha, BatchNorm
    statistics, optimizer state) on the same batches: the held steps leave nothing behind
    that the searched step would see differently."""
    from distpro_lightning.search.step import SearchStep

    captured = {}
    real_run = SearchStep.run

    def spy(self, batch, held_out, step, batch_idx=0):
        if held_out is not None and step == 3:
            captured.update(
                module=copy.deepcopy(self.module.state_dict()),
                optimizer=copy.deepcopy(self.optimizer.state_dict()),
                batch=copy.deepcopy(batch),
                held_out=copy.deepcopy(held_out),
                settings=self.requested,
            )
        record, context = real_run(self, batch, held_out, step, batch_idx)
        if held_out is not None and step == 3:
            captured["hypergradient"] = record.hypergradient.detach().clone()
        return record, context

    monkeypatch.setattr(SearchStep, "run", spy)
    sparse = _search(tmp_path / "sparse", steps=5, search_every_n_steps=3)
    assert sparse.process.searched_steps() == [0, 3] and "hypergradient" in captured
    monkeypatch.setattr(SearchStep, "run", real_run)

    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    m.load_state_dict(captured["module"])
    m.train()
    optimizer = m.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    optimizer = optimizer[0][0] if isinstance(optimizer, tuple | list) else optimizer
    optimizer.load_state_dict(captured["optimizer"])
    assert optimizer.state  # the momentum buffers of steps 0-2 are part of the state
    dense = SearchStep(m, optimizer, captured["settings"])  # no sparsity: a dense step
    record, _ = dense.run(captured["batch"], captured["held_out"], step=3)
    torch.testing.assert_close(record.hypergradient, captured["hypergradient"])
    assert captured["hypergradient"].abs().sum() > 0


def test_a_resumed_search_records_its_own_planned_steps(tmp_path):
    """A search resumed with a longer plan: ``search_size.planned_steps`` is the resumed
    fit's plan, not the first fit's (a stale 2 would mark the finished file interrupted)."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32, mode="search", subset=512, seed=0)
    first = ProcessSearchCallback(output={"save_path": None})
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[first])
    module = make_module(transforms=["conv_bn"])
    trainer.fit(module, datamodule=dm)
    assert first.process.provenance["search_size"]["planned_steps"] == 2
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    again = ProcessSearchCallback(output={"save_path": None})
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[again])
    trainer.fit(make_module(transforms=["conv_bn"]), datamodule=dm, ckpt_path=tmp_path / "s.ckpt")
    assert len(again.process) == 4
    assert again.process.provenance["search_size"]["planned_steps"] == 4
