"""The search's held-out data (``search.heldout``): what ``held_out`` may give, refused at
fit start (or at the first draw) with the source and the fix, the process file untouched."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from own_project import PlainData
from search_cases import digits, search
from torch.utils.data import DataLoader, TensorDataset

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.search.heldout import HeldOutDataError
from distpro_lightning.search.settings import OutputConfig

PREVIOUS = b'{"a process file of an earlier run": true}\n'


def _callback(tmp: Path) -> ProcessSearchCallback:
    """A search writing to ``tmp/s.json``, which holds an earlier run's bytes."""
    (tmp / "s.json").write_bytes(PREVIOUS)
    output = OutputConfig(save_path=str(tmp / "s.json"), overwrite=True, plot=False)
    return ProcessSearchCallback(output=output, held_out="val_dataloader")


def _refused(tmp: Path, dm, match: str, loader: DataLoader | None = None) -> None:
    """A fit with held-out data ``dm.val_dataloader()`` (or ``loader``) stops with ``match``
    before any row, leaving the earlier file as it was."""
    cb = _callback(tmp)
    cb.search_val_loader = loader
    # a loader set on the callback wins over held_out='val_dataloader', which it says
    given = loader is not None
    warned = pytest.warns(UserWarning, match="search_val_loader is set") if given else nullcontext()
    with warned, pytest.raises(HeldOutDataError, match=match):
        search(tmp, dm=dm, callback=cb)
    assert (tmp / "s.json").read_bytes() == PREVIOUS
    assert cb.process is None or len(cb.process) == 0


class SeveralValLoaders(PlainData):
    """A data module with ``count`` validation loaders (Lightning's multiple val sets)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def val_dataloader(self):
        one = super().val_dataloader()
        return [one] * self.count


def test_several_held_out_loaders_are_refused_naming_held_out_and_the_fix(tmp_path):
    match = r"held_out='val_dataloader'.* is 2 loaders; .*give held_out a method that returns one"
    _refused(tmp_path, SeveralValLoaders(2), match)


def test_a_list_of_one_held_out_loader_is_that_loader(tmp_path):
    cb, _, _ = search(tmp_path, dm=SeveralValLoaders(1), callback=_callback(tmp_path))
    assert len(cb.held_out.dataset) == 32 and len(cb.process) == 2


class EmptyVal(PlainData):
    """A data module whose held-out split has no samples."""

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[:0], self.y[:0]), batch_size=16)


def _no_samples(items):
    return torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)


EMPTY_BATCHES = {
    "collate_fn": dict(batch_size=16, collate_fn=_no_samples),
    "batch_sampler": dict(batch_sampler=[[], []]),
}


def test_an_empty_held_out_dataset_is_refused_at_fit_start(tmp_path):
    _refused(tmp_path, EmptyVal(), r"held_out='val_dataloader'.* has 0 samples.*mode='search'")


@pytest.mark.parametrize("source", sorted(EMPTY_BATCHES))
def test_an_empty_held_out_batch_is_refused_naming_held_out(tmp_path, source):
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    loader = DataLoader(data, **EMPTY_BATCHES[source])
    match = rf"held_out\) gave a batch of 0 samples \(its {source}.*at least one sample"
    _refused(tmp_path, PlainData(), match, loader)


def test_a_retrain_data_modules_empty_validation_as_held_out_is_refused(tmp_path):
    match = (
        r"held_out='val_dataloader', the data module's val_dataloader\(\)\) is \[\], no loader: "
        r"the held-out split is empty; .*mode='search'.*val_fraction=0.1"
    )
    _refused(tmp_path, digits(mode="retrain"), match)
    # the fix the message gives (and docs/troubleshooting.md): a validation split
    cb, _, _ = search(
        tmp_path, dm=digits(mode="retrain", val_fraction=0.25), callback=_callback(tmp_path)
    )
    assert len(cb.held_out.dataset) == 20 and len(cb.process) == 2  # a quarter of 80 images


def test_a_loader_set_on_the_callback_says_it_replaces_held_out(tmp_path):
    """``callback.search_val_loader`` wins over ``held_out=``: said, not silent."""
    from distpro_lightning.search.heldout import held_out_loader

    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4).long()), 2)
    with pytest.warns(UserWarning, match=r"held_out='val_dataloader' is not used"):
        assert held_out_loader(None, "val_dataloader", loader) is loader


def _loaders(n: int = 32) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10)
    val = TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10)
    return DataLoader(train, batch_size=8), DataLoader(val, batch_size=8)


@pytest.mark.parametrize("given", ["loader", "val_dataloaders"])
def test_plain_trainer_fit_with_loaders_searches_on_the_held_out_loader(given):
    """``trainer.fit(model, train_loader, val_loader)`` without a data module: ``held_out``
    takes the loader itself, or ``"val_dataloaders"`` for the loader passed to fit."""
    from conftest import make_module, quiet_trainer

    train, val = _loaders()
    held_out = val if given == "loader" else "val_dataloaders"
    cb = ProcessSearchCallback(held_out=held_out, output={"save_path": None})
    module = make_module(transforms=["conv_bn"])
    quiet_trainer(max_steps=2, callbacks=[cb], num_sanity_val_steps=0).fit(module, train, val)
    assert len(cb.process) == 2
    assert cb.held_out.dataset is val.dataset  # drawn from the validation loader's samples


def test_val_dataloaders_without_a_validation_loader_is_refused_with_the_fix():
    from conftest import make_module, quiet_trainer

    train, _ = _loaders()
    cb = ProcessSearchCallback(held_out="val_dataloaders", output={"save_path": None})
    with pytest.raises(HeldOutDataError, match=r"trainer.fit\(model, train_loader, val_loader\)"):
        quiet_trainer(max_steps=1, callbacks=[cb]).fit(make_module(transforms=["conv_bn"]), train)
