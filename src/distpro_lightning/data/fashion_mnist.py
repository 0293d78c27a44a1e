"""Fashion-MNIST, read offline from the four original IDX ``.gz`` files."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets, transforms

from distpro_lightning.data.images import ImageFileDataModule

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "FashionMNISTDataModule"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the original files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: The four original files (torchvision reads them decompressed, without ``.gz``).
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def _find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class FashionMNISTDataModule(ImageFileDataModule):
    """Fashion-MNIST (10 classes, 1 x 28 x 28), read offline from the original IDX files.

    The four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each either plain or ``.gz``)
    are looked for, in this order, in

    1. ``data_dir/FashionMNIST/raw/`` (torchvision's own layout),
    2. ``data_dir`` itself,
    3. the directories of `system_dirs`, by default
       ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``).

    The first directory holding all four is used. Files found outside
    ``data_dir/FashionMNIST/raw/`` are decompressed (``.gz``) or symlinked (plain) into it, and
    the data is read with ``torchvision.datasets.FashionMNIST(root=data_dir, download=False)``.
    If nothing is found, ``download=True`` lets torchvision download the files; otherwise a
    `FileNotFoundError` lists every place searched.

    Transforms: ``ToTensor`` + ``Normalize(0.2860, 0.3530)``; the training transform first
    applies ``RandomCrop(28, padding=2)`` + ``RandomHorizontalFlip`` when ``augment`` is true.

    See `SplitDataModule` for ``mode``, ``subset``, the
    search split and the other shared options.

    Args:
        data_dir: Dataset root; ``data_dir/FashionMNIST/raw/`` must be writable if the files
            are taken from elsewhere.
        download: Download with torchvision if the files are found nowhere.
        augment: Random crop + horizontal flip on the training split.

    Example (Python):

    ```python
    from distpro_lightning.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(data_dir="data", mode="search", batch_size=128)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))  # (128, 1, 28, 28), (128,)
    ```

    Example (YAML):

    ```yaml
    data:
      class_path: distpro_lightning.data.FashionMNISTDataModule
      init_args:
        data_dir: data
        mode: search
        batch_size: 128
        augment: true
    ```
    """

    #: Directories searched after ``data_dir`` (override, e.g. in tests, to change them).
    system_dirs: tuple[str, ...] = (DEBIAN_FASHION_MNIST_DIR,)

    num_classes = 10
    in_channels = 1
    image_size = 28
    crop_padding = 2
    mean = FASHION_MNIST_MEAN
    std = FASHION_MNIST_STD

    @property
    def raw_dir(self) -> Path:
        """``data_dir/FashionMNIST/raw``, where torchvision reads the decompressed files."""
        return Path(self.data_dir) / "FashionMNIST" / "raw"

    def search_dirs(self) -> list[Path]:
        """Directories searched for the files, in order."""
        return [self.raw_dir, Path(self.data_dir), *(Path(d) for d in self.system_dirs)]

    def _locate(self) -> Path | None:
        for directory in self.search_dirs():
            if all(_find_file(directory, name) is not None for name in FASHION_MNIST_FILES):
                return directory
        return None

    def _install_into_raw(self, source_dir: Path) -> None:
        raw = self.raw_dir
        raw.mkdir(parents=True, exist_ok=True)
        for name in FASHION_MNIST_FILES:
            target = raw / name
            if target.is_file():
                continue
            source = _find_file(source_dir, name)
            assert source is not None
            if source.suffix == ".gz":
                # Decompress to a temporary file, then rename: safe if several processes race.
                fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.")
                try:
                    with gzip.open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            else:
                try:
                    target.symlink_to(source.resolve())
                except FileExistsError:
                    pass
                except OSError:
                    shutil.copyfile(source, target)

    def _missing_message(self) -> str:
        searched = "\n".join(f"  - {d}" for d in self.search_dirs())
        files = ", ".join(f"{n}[.gz]" for n in FASHION_MNIST_FILES)
        return (
            f"Fashion-MNIST files not found. Looked for {files} in:\n{searched}\n"
            "To get them, either install Debian's package (as root: "
            "`apt-get install dataset-fashion-mnist`, which puts them in "
            f"{DEBIAN_FASHION_MNIST_DIR}), copy the four files into data_dir, or pass "
            "download=True to let torchvision download them."
        )

    def prepare_data(self) -> None:
        """Find the files and put them where torchvision reads them (or download them)."""
        source = self._locate()
        if source is None:
            if not self.download:
                raise FileNotFoundError(self._missing_message())
            for train in (True, False):
                datasets.FashionMNIST(root=self.data_dir, train=train, download=True)
            return
        if source != self.raw_dir:
            self._install_into_raw(source)

    def _dataset(self, train: bool, transform: transforms.Compose) -> Dataset:
        if not all((self.raw_dir / name).is_file() for name in FASHION_MNIST_FILES):
            self.prepare_data()
        return datasets.FashionMNIST(
            root=self.data_dir, train=train, transform=transform, download=False
        )

    def _build_train_dataset(self) -> Dataset:
        return self._dataset(True, self.train_transform())

    def _build_test_dataset(self) -> Dataset:
        return self._dataset(False, self.eval_transform())

    def _build_train_eval_dataset(self) -> Dataset:
        return self._dataset(True, self.eval_transform())
