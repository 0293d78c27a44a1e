"""Shared base class of the DistPro data modules: the ``search`` / ``retrain`` split logic."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .splits import compute_split, test_subset

__all__ = ["Mode", "SplitDataModule"]

Mode = Literal["search", "retrain"]


def check_number(owner: str, name: str, value: Any, kind: str, must: str) -> None:
    """Refuse ``value`` unless it is a number of ``kind`` (``"int"``, or ``"float"``, which an
    int is too; a bool is neither) or, where ``must`` starts with ``None``, ``None``; the
    error names the argument, the value given and what it must be:
    ``DigitsDataModule(batch_size='4'): batch_size must be a positive int, got a str (in
    YAML: a number without quotes).`` The rule is `grouping.check_field_types`'s, which
    ``data/`` may not import (a sibling layer); the range is the caller's to check."""
    if value is None and must.startswith("None"):
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and (kind == "float" or isinstance(value, int)):
        return
    yaml = " (in YAML: a number without quotes)" if isinstance(value, str) else ""
    raise TypeError(
        f"{owner}({name}={value!r}): {name} must be {must}, got a {type(value).__name__}{yaml}."
    )


class SplitDataModule(LightningDataModule):
    """Base class of every DistPro data module: official splits plus a seeded search split.

    In ``mode="search"`` the training set is split, deterministically for a given ``seed``,
    into the part that trains the student (`train_dataloader`) and a held-out part for the
    meta-gradient of the process parameters (`search_val_dataloader`, training transform);
    in ``mode="retrain"`` (default) the student trains on the whole pool. Validation
    (`val_dataloader`) never sees the test split, which only `test_dataloader` serves.
    The phases, the index bookkeeping, the validation rules, DDP and the hooks a subclass
    implements are described on the docs page *Reference / Data* (``docs/reference/data.md``).
    Subclasses pass the arguments below through (``super().__init__(**kwargs)``), so each is
    declared here only and every subclass takes them as flat keys
    (``--data.init_args.batch_size``).

    Args:
        data_dir: Directory holding (or receiving) the dataset files.
        batch_size: Batch size of every dataloader.
        num_workers: Worker processes per dataloader.
        mode: ``"search"`` (80/20 split of the training set) or ``"retrain"`` (full set).
        search_val_fraction: Fraction of the training pool held out in search mode.
        subset: Use only ``subset`` training samples (first ones of a seeded shuffle) and at
            most ``subset`` test samples; ``None`` uses everything. For quick runs.
        seed: Seed of the subset selection, of the search split and of the distributed
            search-validation sampler.
        pin_memory: ``pin_memory`` of every dataloader.
        search_val_batch_size: Batch size of `search_val_dataloader`; defaults to
            ``batch_size``.
        val_fraction: Fraction of the training pool held out for validation in both modes
            (``None``: the search split in search mode, no validation in retrain mode).
    """

    def __init__(
        self,
        data_dir: str = "",
        batch_size: int = 128,
        num_workers: int = 0,
        mode: Mode = "retrain",
        search_val_fraction: float = 0.2,
        subset: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        search_val_batch_size: int | None = None,
        val_fraction: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("search", "retrain"):
            raise ValueError(f"mode must be 'search' or 'retrain', got {mode!r}")
        owner = type(self).__name__
        for name, value, kind, must in (
            ("batch_size", batch_size, "int", "a positive int"),
            ("num_workers", num_workers, "int", "an int >= 0"),
            ("search_val_fraction", search_val_fraction, "float", "a number in (0, 1)"),
            ("subset", subset, "int", "None or a positive int"),
            ("search_val_batch_size", search_val_batch_size, "int", "None or a positive int"),
            ("val_fraction", val_fraction, "float", "None or a number in (0, 1)"),
        ):
            check_number(owner, name, value, kind, must)
        if not 0.0 < search_val_fraction < 1.0:
            raise ValueError(f"search_val_fraction must lie in (0, 1), got {search_val_fraction}")
        if val_fraction is not None and not 0.0 < val_fraction < 1.0:
            raise ValueError(
                f"val_fraction must be None or lie in (0, 1), got {val_fraction}; None holds out "
                "nothing beyond the search split."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if search_val_batch_size is not None and search_val_batch_size < 1:
            raise ValueError(f"search_val_batch_size must be >= 1, got {search_val_batch_size}")
        if subset is not None and subset < 1:
            raise ValueError(f"subset must be None or >= 1, got {subset}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        given = {"search_val_fraction": search_val_fraction != 0.2}
        given["search_val_batch_size"] = search_val_batch_size is not None
        if mode == "retrain" and any(given.values()):
            names = ", ".join(name for name, set_ in given.items() if set_)
            rank_zero_warn(
                f"{type(self).__name__}({names}=...) has no effect in mode='retrain' (no "
                "search split is made); drop it, or use mode='search' for a search."
            )
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mode: Mode = mode
        self.search_val_fraction = search_val_fraction
        self.subset = subset
        self.seed = seed
        self.pin_memory = pin_memory
        self.search_val_batch_size = search_val_batch_size
        self.val_fraction = val_fraction

        self._train_full: Dataset | None = None
        self._train_eval_full: Dataset | None = None
        self._val_indices: torch.Tensor | None = None
        self._test_full: Dataset | None = None
        self._split_key: tuple | None = None
        self._train_indices: torch.Tensor | None = None
        self._search_val_indices: torch.Tensor | None = None
        self._test_indices: torch.Tensor | None = None
        self.save_hyperparameters()  # this class's arguments and the subclass's

    # ------------------------------------------------------------------ dataset description
    @property
    def num_classes(self) -> int:
        """Number of classes."""
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        """Number of input channels of an image."""
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        """Side length, in pixels, of the (square) images the dataloaders yield."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(in_channels, image_size, image_size)`` of one sample."""
        return (self.in_channels, self.image_size, self.image_size)

    # ------------------------------------------------------------------ subclass hooks
    def _build_train_dataset(self) -> Dataset:
        """Return the full official training set, with the training transform."""
        raise NotImplementedError

    def _build_test_dataset(self) -> Dataset:
        """Return the full official test set, with the evaluation transform."""
        raise NotImplementedError

    def _build_train_eval_dataset(self) -> Dataset:
        """Return the full official training set with the evaluation transform (validation
        images are training images); default: `_build_train_dataset`'s dataset."""
        return self._build_train_dataset()

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Load the datasets needed for ``stage`` and compute the index splits.

        Idempotent and cheap on repeated calls; the dataloader methods call it lazily, so
        calling it explicitly is optional.
        """
        if stage in (None, "fit"):
            self._ensure_train()
            self._skip_missing_validation(stage)
        self._ensure_test()

    def _skip_missing_validation(self, stage: str | None) -> None:
        """In a fit without a validation split (retrain mode, no ``val_fraction``): set the
        Trainer's ``limit_val_batches=0``, so Lightning skips validation instead of warning
        about an empty loader (`has_validation`); a limit the user set is warned about."""
        trainer = getattr(self, "trainer", None)
        if stage != "fit" or trainer is None or self.has_validation:
            return
        given = trainer.limit_val_batches
        if given not in (0, 0.0, 1.0):
            rank_zero_warn(
                f"Trainer(limit_val_batches={given}) has no effect: {type(self).__name__} has no "
                "validation split (mode='retrain' without val_fraction), so validation is "
                "skipped. Give val_fraction (e.g. 0.1) to validate."
            )
        trainer.limit_val_batches = 0

    def _ensure_train(self) -> tuple[Dataset, torch.Tensor]:
        """Load the training set and compute the splits if not done for the current
        settings; return the training set and the indices `train_dataloader` serves."""
        if self._train_full is None:
            self._train_full = self._build_train_dataset()
        key = (self.mode, self.seed, self.subset, self.search_val_fraction, self.val_fraction)
        if self._split_key != key:
            if self.mode not in ("search", "retrain"):
                raise ValueError(f"mode must be 'search' or 'retrain', got {self.mode!r}")
            train, search_val, val = compute_split(
                len(self._train_full), self.mode, self.seed, self.subset,
                self.search_val_fraction, self.val_fraction,
            )  # fmt: skip
            self._train_indices, self._search_val_indices = train, search_val
            self._val_indices = val if self.val_fraction is not None else search_val
            self._split_key = key
        assert self._train_indices is not None
        return self._train_full, self._train_indices

    def _ensure_test(self) -> tuple[Dataset, torch.Tensor]:
        """Load the test set once; return it and the indices `test_dataloader` serves."""
        if self._test_full is None:
            self._test_full = self._build_test_dataset()
            self._test_indices = test_subset(len(self._test_full), self.seed, self.subset)
        assert self._test_indices is not None
        return self._test_full, self._test_indices

    # ------------------------------------------------------------------ indices / datasets
    @property
    def train_indices(self) -> torch.Tensor:
        """Sorted indices (into the official training set) served by `train_dataloader`."""
        return self._ensure_train()[1]

    @property
    def search_val_indices(self) -> torch.Tensor | None:
        """Sorted indices of the held-out search split; ``None`` in retrain mode."""
        self._ensure_train()
        return self._search_val_indices

    @property
    def val_indices(self) -> torch.Tensor | None:
        """Sorted indices (into the official *training* set) served by `val_dataloader`;
        ``None`` in retrain mode without ``val_fraction`` (no validation)."""
        self._ensure_train()
        return self._val_indices

    @property
    def val_dataset(self) -> Dataset | None:
        """The validation images (training images, evaluation transform), or ``None``."""
        indices = self.val_indices
        if indices is None:
            return None
        if self._train_eval_full is None:
            self._train_eval_full = self._build_train_eval_dataset()
        return Subset(self._train_eval_full, indices.tolist())

    @property
    def test_indices(self) -> torch.Tensor:
        """Sorted indices (into the official test set) served by `test_dataloader`."""
        return self._ensure_test()[1]

    @property
    def train_dataset(self) -> Dataset:
        """The training samples of the current mode (a `Subset`)."""
        full, indices = self._ensure_train()
        return Subset(full, indices.tolist())

    @property
    def search_val_dataset(self) -> Dataset:
        """The held-out search split (training transform); raises outside search mode."""
        self._check_search_mode()
        full, _ = self._ensure_train()
        assert self._search_val_indices is not None
        return Subset(full, self._search_val_indices.tolist())

    @property
    def test_dataset(self) -> Dataset:
        """The official test split (at most ``subset`` samples), with the eval transform."""
        full, indices = self._ensure_test()
        return Subset(full, indices.tolist())

    def _check_search_mode(self) -> None:
        if self.mode != "search":
            raise RuntimeError(
                "search_val_dataloader() exists only in search mode (the held-out 20 % split of "
                f"the training set used for DistPro's meta-gradient); this data module has "
                f"mode={self.mode!r}. Construct it with mode='search'."
            )

    # ------------------------------------------------------------------ dataloaders
    def _loader(self, dataset: Dataset, **kwargs: object) -> DataLoader:
        kwargs.setdefault("batch_size", self.batch_size)
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,  # type: ignore[arg-type]
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled loader of the training split (80 % in search mode, everything in retrain).

        A plain ``DataLoader(shuffle=True)``: under DDP Lightning swaps in its
        ``DistributedSampler``.
        """
        return self._loader(self.train_dataset, shuffle=True)

    @property
    def has_validation(self) -> bool:
        """Whether there is a validation split: in search mode, or with ``val_fraction``.
        Without one, fit with ``Trainer(limit_val_batches=0)`` (``distpro fit`` sets it) so
        Lightning skips validation without warning about an empty loader."""
        return self.mode == "search" or self.val_fraction is not None

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Loader of the validation images, held out from the training set (evaluation
        transform, not shuffled); ``[]`` (no validation, `has_validation` is false) in
        retrain mode without ``val_fraction``. Never the test split."""
        dataset = self.val_dataset
        if dataset is None:
            return []
        return self._loader(dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Loader of the official test split (evaluation transform, not shuffled)."""
        return self._loader(self.test_dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """``trainer.predict``'s loader: the test split, in order, as ``(image, label)``
        batches (the modules' ``predict_step`` returns the student's logits per batch)."""
        return self._loader(self.test_dataset, shuffle=False)

    def search_val_dataloader(
        self, distributed: bool = False, num_replicas: int = 1, rank: int = 0
    ) -> DataLoader:
        """Loader of the held-out search split (search mode only).

        Shuffled, ``drop_last=True`` (every meta-step sees a full batch), with the training
        transform, as DARTS does for its architecture-validation queue. If the split is smaller
        than one batch (per replica), the batch size is reduced to fit, with a warning, so the
        loader is never empty.

        Args:
            distributed: Shard the split with a ``DistributedSampler(shuffle=True, seed=seed,
                drop_last=True)``. The caller must call ``loader.sampler.set_epoch(epoch)``
                whenever it starts a new pass over the loader (e.g. when it cycles it).
            num_replicas: Number of processes sharing the split (DDP world size).
            rank: Rank of this process.

        Raises:
            RuntimeError: If the data module is not in search mode.
        """
        self._check_search_mode()
        dataset = self.search_val_dataset
        batch_size = self.search_val_batch_size or self.batch_size
        if distributed:
            if num_replicas < 1 or not 0 <= rank < num_replicas:
                raise ValueError(f"invalid num_replicas={num_replicas}, rank={rank}")
            sampler: DistributedSampler | None = DistributedSampler(
                dataset,
                num_replicas=num_replicas,
                rank=rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
            available = len(sampler)
        else:
            sampler = None
            available = len(dataset)  # type: ignore[arg-type]
        if available < 1:
            raise ValueError(
                f"the search-validation split has {len(dataset)} samples, fewer than "  # type: ignore[arg-type]
                f"num_replicas={num_replicas}"
            )
        if batch_size > available:
            rank_zero_warn(
                f"search-validation split has only {available} samples per process; reducing "
                f"its batch size from {batch_size} to {available} so drop_last keeps one batch"
            )
            batch_size = available
        return self._loader(
            dataset,
            batch_size=batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
        )
