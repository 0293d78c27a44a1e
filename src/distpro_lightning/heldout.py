"""The held-out batch stream of the search: the only place held-out batches are drawn."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

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


class HeldOutStream:
    """An endless, resumable stream of held-out batches for one rank.

    A *cycle* is one pass over the held-out dataset in the order of a permutation seeded
    with ``seed + cycle``; rank ``r`` of ``world_size`` takes every ``world_size``-th index
    from ``r``, cut to whole batches of the same count on every rank (``drop_last``). The
    position (cycle, batches consumed) is the checkpoint state, so a resumed search draws
    the batches an uninterrupted one would.

    The batches are served by a ``DataLoader`` over the user's dataset with the user's
    loader settings (batch size, ``collate_fn``, workers, pinned memory, worker init, ...);
    only the sampler is this stream's.

    Args:
        loader: the user's held-out loader (its dataset must have a length).
        seed: seed of the per-cycle permutations.
        world_size: number of ranks sharing the held-out data.
        rank: this rank.
    """

    def __init__(
        self, loader: DataLoader, seed: int = 0, world_size: int = 1, rank: int = 0
    ) -> None:
        if isinstance(loader.dataset, IterableDataset):
            raise TypeError(
                "The held-out loader's dataset is an IterableDataset; the search needs a "
                "map-style dataset (with __len__ and __getitem__) to shuffle and shard it."
            )
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size or 1
        self.settings = {k: getattr(loader, k) for k in _LOADER_SETTINGS if hasattr(loader, k)}
        if self.settings.get("num_workers", 0) > 0:
            self.settings["prefetch_factor"] = loader.prefetch_factor
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        n = len(self.dataset)
        if n // world_size < self.batch_size:
            raise RuntimeError(
                f"The held-out split has {n} samples, fewer than one batch of "
                f"{self.batch_size} per rank ({world_size} ranks)."
            )
        self.cycle = 0
        self.consumed = 0
        self._iter: Iterator[Any] | None = None

    def indices(self) -> list[int]:
        """This rank's indices of the current cycle, whole batches only."""
        g = torch.Generator().manual_seed(self.seed + self.cycle)
        perm = torch.randperm(len(self.dataset), generator=g)
        per_rank = (len(perm) // self.world_size) // self.batch_size * self.batch_size
        return perm[self.rank :: self.world_size][:per_rank].tolist()

    def next_batch(self) -> Any:
        """The next held-out batch (on the CPU, as the loader yields it)."""
        while True:
            if self._iter is None:
                sampler = self.indices()[self.consumed * self.batch_size :]
                loader = DataLoader(
                    self.dataset,
                    batch_size=self.batch_size,
                    sampler=sampler,
                    drop_last=True,
                    **self.settings,
                )
                self._iter = iter(loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None
                self.cycle += 1
                self.consumed = 0
                continue
            self.consumed += 1
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
