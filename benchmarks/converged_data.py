"""Fashion-MNIST as in-memory tensors for the converged protocol: fixed validation set,
per-seed labelled subsets, per-seed search splits, and a data module whose batch order is a
pure function of a seed (so every method of a seed sees the same batches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = 0.2860, 0.3530
VAL_SEED = 12345  # the validation set is the same for every seed and every run


@dataclass
class FashionTensors:
    """The 60,000 training and 10,000 test images (normalised, ``[N, 1, 28, 28]``)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_index: Tensor  # fixed validation images (training set, never trained on by students)
    pool_index: Tensor  # the other training images: students' subsets come from here

    @classmethod
    def load(cls, data_dir: str, val_size: int) -> FashionTensors:
        from torchvision.datasets import FashionMNIST

        from distpro_lightning.data import FashionMNISTDataModule

        FashionMNISTDataModule(data_dir=data_dir).prepare_data()  # Debian files -> raw/
        train = FashionMNIST(data_dir, train=True, download=False)
        test = FashionMNIST(data_dir, train=False, download=False)
        perm = torch.randperm(len(train.data), generator=torch.Generator().manual_seed(VAL_SEED))
        return cls(
            _normalise(train.data),
            train.targets.clone(),
            _normalise(test.data),
            test.targets.clone(),
            perm[:val_size].sort().values,
            perm[val_size:].sort().values,
        )

    def subset(self, seed: int, size: int) -> Tensor:
        """The ``size`` labelled training images of ``seed`` (outside the validation set)."""
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self.pool_index), generator=g)[:size]
        return self.pool_index[pick].sort().values

    def disjoint_subset(self, size: int, exclude_seeds: list[int], draw: int = 0) -> Tensor:
        """``size`` training images outside the validation set and outside the subsets of
        every seed in ``exclude_seeds`` (the shared search's data); ``draw`` k > 0 gives the
        k-th further such set, disjoint from the earlier draws (another search's data)."""
        taken = torch.cat([self.subset(s, size) for s in exclude_seeds])
        free = self.pool_index[~torch.isin(self.pool_index, taken)]
        g = torch.Generator().manual_seed(777)
        pick = torch.randperm(len(free), generator=g)[draw * size : (draw + 1) * size]
        return free[pick].sort().values

    @staticmethod
    def search_split(index: Tensor, seed: int, fraction: float = 0.2) -> tuple[Tensor, Tensor]:
        """``(train, held_out)``: the 80/20 split of a subset for the search of ``seed``."""
        g = torch.Generator().manual_seed(10_000 + seed)
        perm = index[torch.randperm(len(index), generator=g)]
        n_val = round(fraction * len(index))
        return perm[n_val:].sort().values, perm[:n_val].sort().values


def _normalise(images: Tensor) -> Tensor:
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1).contiguous()


class TensorDataModule(LightningDataModule):
    """Training subset, validation set, test set (and, for a search, the held-out split).

    ``val_dataloader`` serves the validation images, never the test set; the test set is
    reached only through ``trainer.test``. The training order is drawn from a generator
    seeded with ``order_seed``: the same for every method of a seed."""

    def __init__(
        self,
        data: FashionTensors,
        train_index: Tensor,
        batch_size: int,
        order_seed: int,
        held_out_index: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.train_index = train_index
        self.batch_size = batch_size
        self.order_seed = order_seed
        self.held_out_index = held_out_index

    def _train_part(self, index: Tensor) -> TensorDataset:
        return TensorDataset(self.data.train_x[index], self.data.train_y[index])

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.order_seed)
        return DataLoader(
            self._train_part(self.train_index), self.batch_size, shuffle=True, generator=g
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._train_part(self.data.val_index), batch_size=1000)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.data.test_x, self.data.test_y), batch_size=1000)

    def search_val_dataloader(self) -> DataLoader:
        """The held-out 20 % of the subset (search only); the callback draws from it."""
        if self.held_out_index is None:
            raise RuntimeError("This data module has no held-out split (not a search).")
        return DataLoader(self._train_part(self.held_out_index), self.batch_size, shuffle=True)
