"""CIFAR-100 with the standard augmentation of the knowledge-distillation literature."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from distpro_lightning.data.images import ImageFileDataModule

__all__ = ["CIFAR100_FILES", "CIFAR100DataModule", "CIFAR100Pickles"]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
#: Files of the ``cifar-100-python/`` folder (the extracted ``cifar-100-python.tar.gz``).
CIFAR100_FILES = ("train", "test", "meta")


class CIFAR100Pickles(Dataset):
    """One split of an extracted ``cifar-100-python/`` folder (fine labels).

    Reads the same files, in the same way, as ``torchvision.datasets.CIFAR100`` (a pickled
    dict with ``data``: ``N x 3072`` uint8 rows in R, G, B planes, and ``fine_labels``), but
    without torchvision's MD5 checks, so that small generated fixtures
    (`distpro_lightning.data.fake.make_fake_cifar100`) load too. The files are Python
    pickles: only point it at files you trust, exactly as with torchvision.

    Args:
        folder: The ``cifar-100-python`` directory.
        train: Read ``train`` (else ``test``).
        transform: Applied to the PIL image.
    """

    def __init__(
        self, folder: str | Path, train: bool = True, transform: Callable | None = None
    ) -> None:
        folder = Path(folder)
        with open(folder / ("train" if train else "test"), "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        self.data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        self.data = self.data.transpose(0, 2, 3, 1).copy()  # N x H x W x C
        self.targets: list[int] = [int(t) for t in entry["fine_labels"]]
        if len(self.targets) != len(self.data):
            raise ValueError(f"{folder}: {len(self.data)} images but {len(self.targets)} labels")
        meta_path = folder / "meta"
        self.classes: list[str] = []
        if meta_path.is_file():
            with open(meta_path, "rb") as f:
                self.classes = list(pickle.load(f, encoding="latin1")["fine_label_names"])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class CIFAR100DataModule(ImageFileDataModule):
    """CIFAR-100 (100 classes, 3 x 32 x 32) from ``data_dir/cifar-100-python/``.

    Expects the extracted official archive, i.e. ``data_dir/cifar-100-python/{train,test,meta}``
    (``data_dir`` may also be that folder itself). With ``download=True`` and missing files,
    ``torchvision.datasets.CIFAR100(data_dir, download=True)`` downloads and extracts it (with
    its MD5 checks). The files are then read by `CIFAR100Pickles` (same format as
    torchvision, no MD5 check, which lets generated test fixtures load).

    Transforms (the usual ones of the KD literature, e.g. CRD / DKD):
    training ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` (if ``augment``) +
    ``ToTensor`` + ``Normalize(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))``;
    evaluation ``ToTensor`` + the same ``Normalize``.

    See `SplitDataModule` for ``mode``, ``subset``, the
    search split and the other shared options.

    Args:
        data_dir: Directory containing ``cifar-100-python/``.
        download: Download with torchvision if the files are missing.
        augment: Random crop + horizontal flip on the training split.

    Example (Python):

    ```python
    from distpro_lightning.data import CIFAR100DataModule

    dm = CIFAR100DataModule(data_dir="data", mode="search", batch_size=64, download=True)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))  # (64, 3, 32, 32), (64,)
    ```

    Example (YAML):

    ```yaml
    data:
      class_path: distpro_lightning.data.CIFAR100DataModule
      init_args:
        data_dir: data
        mode: retrain
        batch_size: 64
        num_workers: 4
    ```
    """

    num_classes = 100
    in_channels = 3
    image_size = 32
    crop_padding = 4
    mean = CIFAR100_MEAN
    std = CIFAR100_STD

    def _candidates(self) -> list[Path]:
        root = Path(self.data_dir)
        return [root / "cifar-100-python", root]

    def _locate(self) -> Path | None:
        for folder in self._candidates():
            if all((folder / name).is_file() for name in CIFAR100_FILES):
                return folder
        return None

    def _missing_message(self) -> str:
        searched = "\n".join(f"  - {d}" for d in self._candidates())
        return (
            f"CIFAR-100 not found: looked for the files {', '.join(CIFAR100_FILES)} in:\n"
            f"{searched}\n"
            "Pass download=True to let torchvision download it, or place the extracted "
            "`cifar-100-python/` folder (from cifar-100-python.tar.gz) under data_dir."
        )

    def prepare_data(self) -> None:
        """Check that the files exist, or download them when ``download`` is true."""
        if self._locate() is not None:
            return
        if not self.download:
            raise FileNotFoundError(self._missing_message())
        for train in (True, False):
            datasets.CIFAR100(root=self.data_dir, train=train, download=True)

    def _folder(self) -> Path:
        folder = self._locate()
        if folder is None:
            self.prepare_data()
            folder = self._locate()
            if folder is None:  # pragma: no cover - download succeeded but layout unexpected
                raise FileNotFoundError(self._missing_message())
        return folder

    def _build_train_dataset(self) -> Dataset:
        return CIFAR100Pickles(self._folder(), train=True, transform=self.train_transform())

    def _build_test_dataset(self) -> Dataset:
        return CIFAR100Pickles(self._folder(), train=False, transform=self.eval_transform())

    def _build_train_eval_dataset(self) -> Dataset:
        return CIFAR100Pickles(self._folder(), train=True, transform=self.eval_transform())
