"""The module-search contract and the search's parts: step context, virtual-step settings,
held-out stream, frozen teacher."""

from __future__ import annotations

import warnings

import pytest
import search_cases as sc
import torch
from conftest import make_module, quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from distpro_lightning import DistProModule, SearchSettings, SearchStep
from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.search.heldout import HeldOutStream


class _CopyingSplit(DistProModule):
    """A ``split_batch`` that builds new tensors (the old identity-matched cache missed)."""

    def split_batch(self, batch):
        return batch[0].clone(), batch[1]


def _small(cls, teacher="resnet14"):
    """A ``cls`` (a DistProModule subclass) of the conftest size, one transform kind."""
    return cls(
        student="resnet8",
        teacher=teacher,
        in_channels=1,
        distillation={"input_shape": [1, 8, 8], "transforms": ["conv_bn"]},
        log_pathway_losses=False,
    )


def _search(module, steps=2, **cb_kwargs):
    cb = sc.callback(**cb_kwargs, output={"save_path": None, "plot": False})
    dm = DigitsDataModule(batch_size=16, mode="search", subset=128, seed=0)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[cb])
    trainer.fit(module, datamodule=dm)
    return cb


def test_teacher_runs_once_per_step_with_a_copying_split_batch():
    torch.manual_seed(0)
    m = _small(_CopyingSplit)
    calls = []
    m.teacher.register_forward_hook(lambda *a: calls.append(1))
    _search(m, steps=3)
    assert len(calls) == 3  # the search's teacher pass is the training step's too
    assert m.step_context is None  # cleared after each batch


def test_search_step_without_a_trainer_updates_and_hands_over_the_teacher():
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"])
    m.train()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1, momentum=0.9)
    step = SearchStep(m, opt, SearchSettings(hypergradient="exact"))
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
    held_out = (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
    record = step(batch, held_out, step=0)
    assert torch.equal(record.logits, m.alpha_logits) and not record.skipped
    assert not torch.equal(record.logits, torch.ones(m.num_pathways))
    assert torch.isfinite(record.hypergradient).all() and record.val_loss is not None
    calls = []
    m.teacher.register_forward_hook(lambda *a: calls.append(1))
    m.training_loss(batch)  # same step: the search's teacher outputs, once
    m.training_loss(batch)
    assert len(calls) == 1
    warm = step(batch, None, step=0)  # warm-up: teacher only, alpha stays
    assert warm.hypergradient is None and torch.equal(warm.logits, record.logits)


def test_other_optimizers_are_warned_once_naming_the_approximation():
    class WithRMSprop(DistProModule):
        def configure_optimizers(self):
            return torch.optim.RMSprop(self.trainable_parameters(), lr=1e-3)

    torch.manual_seed(0)
    m = make_module(WithRMSprop, transforms=["conv_bn"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _search(m, steps=3)
    msgs = [str(r.message) for r in rec if "plain gradient step" in str(r.message)]
    assert len(msgs) == 1 and "RMSprop" in msgs[0] and "momentum" in msgs[0]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_are_followed_exactly_without_a_warning(optimizer):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"], name=optimizer, lr=1e-3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _search(m, steps=3)
    assert not [r for r in rec if "plain gradient step" in str(r.message)]


def test_unapplied_reused_gradient_stops_the_fit():
    class Ignores(DistProModule):
        def training_step(self, batch, batch_idx):
            return self.training_loss(batch).loss

    m = _small(Ignores, teacher="resnet8")
    with pytest.raises(RuntimeError, match="did not apply the reused training gradient"):
        _search(m, steps=1, reuse_training_gradient=True)


def test_held_out_stream_keeps_the_loaders_settings_and_resumes():
    data = TensorDataset(torch.arange(40.0).unsqueeze(1), torch.arange(40))

    def collate(items):
        x, y = torch.utils.data.default_collate(items)
        return x, y, "collated"

    loader = DataLoader(data, batch_size=4, shuffle=True, collate_fn=collate)
    stream = HeldOutStream(loader, seed=3, world_size=2, rank=1)
    batches = [stream.next_batch() for _ in range(7)]  # 5 per cycle on this rank, then cycle 1
    assert all(b[2] == "collated" and len(b[1]) == 4 for b in batches)
    first_cycle = torch.cat([b[1] for b in batches[:5]])
    assert sorted(first_cycle.tolist()) == sorted(set(first_cycle.tolist()))  # no repeats
    other = HeldOutStream(loader, seed=3, world_size=2, rank=0)
    shard0 = torch.cat([other.next_batch()[1] for _ in range(5)])
    assert not set(shard0.tolist()) & set(first_cycle.tolist())  # ranks are disjoint
    state = stream.state_dict()
    resumed = HeldOutStream(loader, seed=3, world_size=2, rank=1)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch()[1], stream.next_batch()[1])


def test_reviewkd_checkpoints_leave_the_teacher_out_and_load_back(tmp_path):
    torch.manual_seed(0)
    kw = dict(student="resnet8", in_channels=1, input_shape=[1, 8, 8], mid_channels=8)
    m = ReviewKDModule(teacher="resnet14", **kw)
    state = m.state_dict()
    assert not any(k.startswith("teacher.") for k in state) and any("abfs." in k for k in state)
    other = ReviewKDModule(teacher=m.teacher, **kw)
    other.load_state_dict(state)
    for k, v in m.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
