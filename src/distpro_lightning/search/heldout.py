"""The held-out batch stream of the search: the only place held-out batches are drawn."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from contextlib import suppress
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from distpro_lightning.errors import DistProError

#: DataLoader settings carried over from the user's held-out loader.
_LOADER_SETTINGS = (
    "collate_fn",
    "num_workers",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)

#: How to give the search held-out data, for the messages about missing held-out data.
_HOW_TO_HOLD_OUT = (
    "a DistPro data module holds data out in mode='search' (held_out=None uses its "
    "search_val_dataloader()) or with val_fraction=0.1 (held_out='val_dataloader'); else "
    "name a method returning one DataLoader of held-out samples"
)


class HeldOutDataError(DistProError, ValueError):
    """The search's held-out data is missing, empty, or not one loader."""


class HeldOutStream:
    """An endless, resumable stream of held-out batches for one rank.

    A *cycle* is one pass over the held-out data; its position (cycle, batches consumed) is
    the checkpoint state, so a resumed search draws the batches an uninterrupted one would.
    What a cycle is depends on the user's loader:

    * a plain loader (``shuffle=True`` or ``False``): a permutation of the dataset seeded
      with ``seed + cycle`` (the search always draws its held-out batches at random);
    * a loader with its own ``sampler`` (e.g. ``WeightedRandomSampler``,
      ``SubsetRandomSampler``): that sampler's indices, in its order, each cycle (its
      ``set_epoch(cycle)`` is called where it has one); the search's ``seed`` does not
      apply, and a resume repeats the cycle exactly only if the sampler is deterministic
      for an epoch;
    * a loader with a ``batch_sampler``: its batches, as they are, each cycle (likewise).

    Rank ``r`` of ``world_size`` takes every ``world_size``-th index (batch, for a batch
    sampler) from ``r``, cut to whole batches of the same count on every rank; a
    ``DistributedSampler`` is already this rank's share and is used as it is. Incomplete
    batches are dropped. Batches are served by a ``DataLoader`` over the user's dataset with
    the user's settings (``collate_fn``, workers, ``pin_memory``, ``worker_init_fn``, ...).

    Args:
        loader: the user's held-out loader: a map-style dataset with a length, and batching
            (``batch_size`` or ``batch_sampler``).
        seed: seed of the per-cycle permutations of a plain loader.
        world_size: number of ranks sharing the held-out data.
        rank: this rank.
    """

    def __init__(
        self, loader: DataLoader, seed: int = 0, world_size: int = 1, rank: int = 0
    ) -> None:
        self.dataset = loader.dataset
        _check_loader(loader)
        self.batch_sampler: Iterable[list[int]] | None = None
        self.sampler: Iterable[int] | None = None
        if loader.batch_size is None:
            self.batch_sampler = loader.batch_sampler
        elif not isinstance(loader.sampler, SequentialSampler | RandomSampler):
            self.sampler = loader.sampler
        self.batch_size = loader.batch_size or 1
        self.settings = {k: getattr(loader, k) for k in _LOADER_SETTINGS if hasattr(loader, k)}
        if self.settings.get("num_workers", 0) > 0:
            self.settings["prefetch_factor"] = loader.prefetch_factor
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        n = len(self.dataset)  # type: ignore[arg-type]
        if (
            self.batch_sampler is None
            and self.sampler is None
            and n // world_size < self.batch_size
        ):
            if n // world_size < 1:
                raise HeldOutDataError(
                    f"The held-out loader (held_out) has {n} samples, fewer than one per rank "
                    f"({world_size} rank(s)): give the search more held-out samples; "
                    f"{_HOW_TO_HOLD_OUT}."
                )
            # a usual val_dataloader (batch 128 over 64 images): its whole split is the batch
            rank_zero_warn(
                f"The held-out loader's batch size {self.batch_size} is larger than its split "
                f"({n} samples, {world_size} rank(s)): each search step uses all "
                f"{n // world_size} per rank as its held-out (meta-)batch. The held-out batch "
                "size is the meta-batch size; give the loader a batch size that fits to set it."
            )
            self.batch_size = n // world_size
        self.cycle = 0
        self.consumed = 0
        self._iter: Iterator[Any] | None = None

    def indices(self) -> list[int]:
        """This rank's indices of the current cycle, whole batches only (a loader without
        a ``batch_sampler``)."""
        if self.sampler is not None:
            _set_epoch(self.sampler, self.cycle)
            drawn = list(self.sampler)
            if not isinstance(self.sampler, DistributedSampler):
                per_rank = len(drawn) // self.world_size
                drawn = drawn[self.rank :: self.world_size][:per_rank]
        else:
            g = torch.Generator().manual_seed(self.seed + self.cycle)
            perm = torch.randperm(len(self.dataset), generator=g)  # type: ignore[arg-type]
            per_rank = (len(perm) // self.world_size) // self.batch_size * self.batch_size
            drawn = perm[self.rank :: self.world_size][:per_rank].tolist()
        return drawn[: len(drawn) // self.batch_size * self.batch_size]

    def batches(self) -> list[list[int]]:
        """This rank's index batches of the current cycle."""
        if self.batch_sampler is not None:
            _set_epoch(self.batch_sampler, self.cycle)
            drawn = [list(b) for b in self.batch_sampler]
            if any(not b for b in drawn):
                raise HeldOutDataError(_EMPTY_BATCH.format(what="its batch_sampler's"))
            per_rank = len(drawn) // self.world_size
            return drawn[self.rank :: self.world_size][:per_rank]
        idx, b = self.indices(), self.batch_size
        return [idx[i : i + b] for i in range(0, len(idx), b)]

    def next_batch(self) -> Any:
        """The next held-out batch (on the CPU, as the loader yields it)."""
        empty_cycles = 0
        while True:
            if self._iter is None:
                remaining = self.batches()[self.consumed :]
                if not remaining and self.consumed == 0:
                    empty_cycles += 1
                    if empty_cycles > 1:
                        raise RuntimeError(
                            "The held-out loader gives no complete batch for this rank "
                            f"(rank {self.rank} of {self.world_size}): give it more samples "
                            "or smaller batches."
                        )
                self._iter = iter(
                    DataLoader(self.dataset, batch_sampler=remaining, **self.settings)
                )
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None
                self.cycle += 1
                self.consumed = 0
                continue
            self.consumed += 1
            if _batch_size(batch) == 0:
                raise HeldOutDataError(_EMPTY_BATCH.format(what="its collate_fn's output"))
            return batch

    def state_dict(self) -> dict[str, int]:
        return {"val_cycle": self.cycle, "val_consumed": self.consumed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.cycle = int(state["val_cycle"])
        self.consumed = int(state["val_consumed"])
        self._iter = None


def concat_batches(batches: list[Any]) -> Any:
    """One batch from several of the same structure: tensors are concatenated along the
    first dimension, tuples, lists and dicts element by element (one batch: itself)."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return {k: concat_batches([b[k] for b in batches]) for k in first}
    if isinstance(first, tuple | list):
        parts = [concat_batches(list(items)) for items in zip(*batches)]
        return type(first)(parts) if isinstance(first, list) else tuple(parts)
    raise TypeError(
        f"Cannot concatenate held-out batches of type {type(first).__name__}: use "
        "val_batches_per_step=1, or a loader yielding tensors, tuples, lists or dicts."
    )


_EMPTY_BATCH = (
    "The held-out loader (the search's held_out) gave a batch of 0 samples ({what}): every "
    "search step needs held-out samples; make its batch_sampler and collate_fn keep at least "
    "one sample in every batch."
)


def _batch_size(batch: Any) -> int | None:
    """The first dimension of the batch's first tensor (``None``: no tensor in it)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    sizes = (_batch_size(item) for item in batch) if isinstance(batch, tuple | list) else ()
    return next((size for size in sizes if size is not None), None)


def _check_loader(loader: DataLoader) -> None:
    """Refuse a held-out loader the stream cannot shuffle, shard and resume."""
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "The held-out loader's dataset is an IterableDataset; the search needs a map-style "
            "dataset (with __len__ and __getitem__) to shuffle, shard and resume it: collect the "
            "held-out samples into one, e.g. TensorDataset(x, y) or Subset(dataset, indices)."
        )
    if not isinstance(loader.dataset, Sized):
        raise TypeError(
            f"The held-out loader's dataset ({type(loader.dataset).__name__}) has no len(); "
            "the search needs a map-style dataset with __len__ and __getitem__."
        )
    if loader.batch_size is None and loader.batch_sampler is None:
        raise ValueError(
            "The held-out loader has batch_size=None (no batching): give it a batch_size or a "
            "batch_sampler; the search draws one held-out batch per step."
        )


def _set_epoch(sampler: Any, epoch: int) -> None:
    for obj in (sampler, getattr(sampler, "sampler", None)):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)


#: ``held_out`` naming the validation loader(s) of the fit (those passed to
#: ``trainer.fit(model, train_loader, val_loader)``, or the data module's).
FIT_VAL_LOADERS = "val_dataloaders"


def fit_val_loaders(trainer: pl.Trainer) -> Any:
    """The validation loader(s) of this fit, as ``trainer.val_dataloaders`` gives them once
    the validation loop has loaded them (loaded here, at fit start, as the loop would)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if trainer.val_dataloaders is None:
        # no val loader given and no val_dataloader(): Lightning raises; said below
        with suppress(MisconfigurationException):
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
    loaders = trainer.val_dataloaders
    if loaders is None:
        raise HeldOutDataError(
            f"held_out={FIT_VAL_LOADERS!r} names the validation loader of the fit, and this fit "
            "has none (no val_dataloaders given to trainer.fit, no val_dataloader() in the data "
            "module, limit_val_batches=0 or no validation_step): pass one, "
            "trainer.fit(model, train_loader, val_loader), or give held_out=DataLoader(...)."
        )
    return loaders


def held_out_loader(
    trainer: pl.Trainer,
    source: str | pl.LightningDataModule | DataLoader | None,
    given: DataLoader | None = None,
) -> DataLoader:
    """The held-out loader the callback was told to use (see its ``held_out``; ``given``:
    its ``search_val_loader``), checked to be one loader with samples."""
    if isinstance(source, DataLoader) and given is None:
        return one_loader(source, "held_out=DataLoader(...)")
    if source == FIT_VAL_LOADERS and given is None:
        return one_loader(fit_val_loaders(trainer), f"held_out={FIT_VAL_LOADERS!r}")
    if given is not None:
        if source is not None:
            shown = repr(source) if isinstance(source, str) else f"{type(source).__name__}(...)"
            rank_zero_warn(
                "ProcessSearchCallback: callback.search_val_loader is set, so it is the "
                f"held-out data and held_out={shown} is not used. Set only one of them."
            )
        return one_loader(given, "callback.search_val_loader")
    if isinstance(source, pl.LightningDataModule):
        source.prepare_data()
        source.setup("fit")
        origin = f"held_out={type(source).__name__}(...), its train_dataloader()"
        return one_loader(source.train_dataloader(), origin)
    dm = trainer.datamodule
    method = source or "search_val_dataloader"
    if dm is None or not callable(getattr(dm, method, None)):
        where = (
            f"there is no data module (held_out={source!r} reads its {method}())"
            if dm is None
            else f"the data module has no {method}()"
        )
        raise RuntimeError(
            f"ProcessSearchCallback needs held-out batches: {where}. "
            "Use a DistPro data module in mode='search', name your data module's method "
            "(held_out='val_dataloader'), give a data module of held-out data (held_out: "
            "{class_path: ...}), give the loader itself (held_out=DataLoader(...)), or use "
            f"the validation loader passed to trainer.fit (held_out={FIT_VAL_LOADERS!r})."
        )
    origin = f"held_out={source!r}, the data module's {method}()"
    return one_loader(getattr(dm, method)(), origin)


def one_loader(loaders: Any, origin: str) -> DataLoader:
    """The one DataLoader in ``loaders`` (a loader, or a list, tuple or dict of one), with
    samples; ``origin`` says where it came from in the errors."""
    loader = _the_only(loaders, origin)
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"The search's held-out data ({origin}) is a {type(loader).__name__}, not a "
            "DataLoader: give held_out a method that returns a DataLoader of held-out samples."
        )
    data = loader.dataset
    if isinstance(data, Sized) and not isinstance(data, IterableDataset) and not len(data):
        raise HeldOutDataError(
            f"The search's held-out data ({origin}) has 0 samples: the held-out split is "
            f"empty; {_HOW_TO_HOLD_OUT}."
        )
    return loader


def _the_only(loaders: Any, origin: str) -> Any:
    """The one loader of a list, tuple or dict of loaders (a loader: itself)."""
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if not isinstance(loaders, list | tuple):
        return loaders
    if not loaders:
        raise HeldOutDataError(
            f"The search's held-out data ({origin}) is {loaders!r}, no loader: the held-out "
            f"split is empty; {_HOW_TO_HOLD_OUT}."
        )
    if len(loaders) > 1:
        raise HeldOutDataError(
            f"The search's held-out data ({origin}) is {len(loaders)} loaders; the search draws "
            "its held-out batches from one: give held_out a method that returns one (the "
            "first, or a DataLoader over a ConcatDataset of their datasets)."
        )
    return loaders[0]


def steps_per_epoch(trainer: pl.Trainer) -> int | None:
    """Optimizer steps per training epoch (``None`` when unknown)."""
    batches = trainer.num_training_batches
    if batches and batches != float("inf"):
        return max(1, int(batches) // trainer.accumulate_grad_batches)
    return None
