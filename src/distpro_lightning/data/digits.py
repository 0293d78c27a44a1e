"""scikit-learn's 8x8 handwritten digits: a tiny, fully offline data set for smoke runs."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset, TensorDataset

from distpro_lightning.data.base import SplitDataModule

__all__ = ["DIGITS_TEST_SIZE", "DigitsDataModule"]

#: Size of the fixed test split (the remaining 1,397 of the 1,797 images form the training set).
DIGITS_TEST_SIZE = 400
#: Seed of the fixed train/test split (independent of the data module's ``seed``).
DIGITS_SPLIT_SEED = 0
#: Mean / std of all 1,797 images after scaling the 0..16 pixel values to [0, 1].
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3760


class DigitsDataModule(SplitDataModule):
    """scikit-learn's ``load_digits`` (1,797 images, 10 classes, 1 x 8 x 8), offline.

    The data ships inside the scikit-learn wheel (``pip install scikit-learn`` or the
    ``digits`` extra), so nothing is downloaded; a ``data_dir`` has no effect and is said to.

    Digits has no official split. This module uses a fixed, class-stratified split drawn with
    ``sklearn.model_selection.train_test_split(test_size=400, stratify=labels,
    random_state=0)``: 1,397 training and 400 test images, identical for every ``seed`` (the
    ``seed`` option only drives the search split and ``subset``, as in the other modules).

    Pixel values (0..16) are scaled to [0, 1] and normalized with the mean 0.3053 and
    standard deviation 0.3760 of the whole data set. No augmentation.

    See `SplitDataModule` for ``mode``, ``subset``, the
    search split and the other shared options.

    Example (Python):

    ```python
    from distpro_lightning.data import DigitsDataModule

    dm = DigitsDataModule(mode="search", batch_size=32)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))  # (32, 1, 8, 8), (32,)
    ```

    Example (YAML):

    ```yaml
    data:
      class_path: distpro_lightning.data.DigitsDataModule
      init_args:
        mode: retrain
        batch_size: 64
    ```
    """

    num_classes = 10
    in_channels = 1
    image_size = 8

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.data_dir:
            rank_zero_warn(
                f"DigitsDataModule(data_dir={self.data_dir!r}) has no effect: the digits ship "
                "inside scikit-learn and are read from it. Drop data_dir."
            )
        self._arrays: dict[str, torch.Tensor] | None = None

    def prepare_data(self) -> None:
        """Check that scikit-learn is importable (the data ships with it)."""
        self._load()

    def _load(self) -> dict[str, torch.Tensor]:
        if self._arrays is None:
            try:
                from sklearn.datasets import load_digits
                from sklearn.model_selection import train_test_split
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "DigitsDataModule needs scikit-learn: pip install 'distpro-lightning[digits]'"
                ) from err
            bunch = load_digits()
            images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
            images = ((images - DIGITS_MEAN) / DIGITS_STD).unsqueeze(1)
            labels = torch.as_tensor(bunch.target, dtype=torch.long)
            train_idx, test_idx = train_test_split(
                list(range(len(labels))),
                test_size=DIGITS_TEST_SIZE,
                stratify=bunch.target,
                random_state=DIGITS_SPLIT_SEED,
            )
            train_idx = torch.as_tensor(sorted(train_idx))
            test_idx = torch.as_tensor(sorted(test_idx))
            self._arrays = {
                "train_x": images[train_idx],
                "train_y": labels[train_idx],
                "test_x": images[test_idx],
                "test_y": labels[test_idx],
            }
        return self._arrays

    def _build_train_dataset(self) -> Dataset:
        arrays = self._load()
        return TensorDataset(arrays["train_x"], arrays["train_y"])

    def _build_test_dataset(self) -> Dataset:
        arrays = self._load()
        return TensorDataset(arrays["test_x"], arrays["test_y"])
