"""ImageNet-style class folders (ImageNet, Tiny-ImageNet, any ``train/`` + ``val/`` tree)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision import datasets, transforms

from distpro_lightning.data.base import SplitDataModule, check_number

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderDataModule", "prepare_tiny_imagenet_val"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LAYOUT = (
    "expected layout:\n"
    "  <data_dir>/train/<class_name>/<image>   (e.g. train/n01440764/n01440764_10026.JPEG)\n"
    "  <data_dir>/val/<class_name>/<image>     (same class folder names as train/)\n"
    "For Tiny-ImageNet, first run "
    "distpro_lightning.data.prepare_tiny_imagenet_val('<tiny-imagenet-200 dir>') to sort val/ "
    "into class folders."
)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


class _FixedClassesImageFolder(datasets.ImageFolder):
    """``ImageFolder`` whose label mapping is given (the training set's), not re-derived."""

    def __init__(
        self, root: str | Path, class_to_idx: dict[str, int], transform: Callable | None
    ) -> None:
        self._fixed_class_to_idx = dict(class_to_idx)
        super().__init__(root, transform=transform, allow_empty=True)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        mapping = self._fixed_class_to_idx
        return sorted(mapping, key=mapping.__getitem__), mapping


def prepare_tiny_imagenet_val(data_dir: str | os.PathLike) -> int:
    """Sort Tiny-ImageNet's flat ``val/images/`` into ``val/<wnid>/`` class folders, in place.

    The official ``tiny-imagenet-200`` archive ships ``val/images/val_<i>.JPEG`` with the
    labels in ``val/val_annotations.txt`` (tab-separated: file name, wnid, bounding box). This
    moves every listed image to ``val/<wnid>/<file>`` and removes ``val/images/`` once empty,
    so that `ImageFolderDataModule` can read ``val/``. The training images
    (``train/<wnid>/images/*.JPEG``) need no change. Safe to run twice.

    Args:
        data_dir: The ``tiny-imagenet-200`` directory (holding ``train/`` and ``val/``).

    Returns:
        The number of images moved by this call.

    Raises:
        FileNotFoundError: If ``val/val_annotations.txt`` or a listed image is missing.

    Example:

    ```python
    from distpro_lightning.data import prepare_tiny_imagenet_val

    prepare_tiny_imagenet_val("data/tiny-imagenet-200")
    ```
    """
    val = Path(data_dir) / "val"
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(
            f"{annotations} not found: expected the extracted tiny-imagenet-200 folder "
            "(with val/images/ and val/val_annotations.txt)"
        )
    images = val / "images"
    moved = 0
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip():
            continue
        name, wnid = fields[0].strip(), fields[1].strip()
        target = val / wnid / name
        if target.is_file():
            continue
        source = images / name
        if not source.is_file():
            raise FileNotFoundError(f"{source} (listed in {annotations}) not found")
        target.parent.mkdir(exist_ok=True)
        os.replace(source, target)
        moved += 1
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    return moved


class ImageFolderDataModule(SplitDataModule):
    """ImageNet / Tiny-ImageNet style data: one folder per class under ``train/`` and ``val/``.

    Layout:

    ```text
    <data_dir>/train/<class_name>/*.JPEG   (sub-folders inside a class folder are fine,
                                            e.g. Tiny-ImageNet's train/<wnid>/images/)
    <data_dir>/val/<class_name>/*.JPEG     (class names must be a subset of train's)
    ```

    Labels are the indices of the sorted ``train/`` class folder names, and ``val/`` reuses
    that mapping. ``num_classes`` is the number of ``train/`` class folders (readable before
    `setup`). For ImageNet, ``val/`` must already be sorted into class folders (as most
    ImageNet preparation scripts do); for Tiny-ImageNet call
    `prepare_tiny_imagenet_val` once. ``val/`` serves as the test split
    (``test_dataloader`` only); the search split and the validation images
    (``val_dataloader``) are carved from ``train/``.

    Transforms, ImageNet mean/std: training ``RandomResizedCrop(image_size)`` +
    ``RandomHorizontalFlip`` (if ``augment``; otherwise the evaluation transform);
    evaluation ``Resize(int(image_size * 256 / 224))`` + ``CenterCrop(image_size)``.
    For Tiny-ImageNet's native 64 x 64 images pass ``image_size=64``.

    See `SplitDataModule` for ``mode``, ``subset``, the
    search split and the other shared options.

    Args:
        data_dir: Root holding ``train/`` and ``val/``.
        image_size: Side of the square crops fed to the network.
        augment: Random resized crop + horizontal flip on the training split.

    Example (Python):

    ```python
    from distpro_lightning.data import ImageFolderDataModule

    dm = ImageFolderDataModule(data_dir="data/imagenet", mode="search", num_workers=8)
    dm.setup("fit")
    print(dm.num_classes)  # 1000
    ```

    Example (YAML):

    ```yaml
    data:
      class_path: distpro_lightning.data.ImageFolderDataModule
      init_args:
        data_dir: data/tiny-imagenet-200
        image_size: 64
        batch_size: 128
        num_workers: 8
        mode: search
    ```
    """

    in_channels = 3

    def __init__(
        self, data_dir: str, image_size: int = 224, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        check_number(type(self).__name__, "image_size", image_size, "int", "a positive int")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self._image_size = image_size
        self.augment = augment
        self._classes: list[str] | None = None

    @property
    def image_size(self) -> int:
        """Side of the square crops (``image_size`` argument)."""
        return self._image_size

    @property
    def classes(self) -> list[str]:
        """Sorted class folder names of ``train/``; label ``i`` is ``classes[i]``."""
        if self._classes is None:
            self._check_layout()
            self._classes = _class_dirs(Path(self.data_dir) / "train")
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of class folders under ``train/``."""
        return len(self.classes)

    def _check_layout(self) -> None:
        root = Path(self.data_dir)
        problems = []
        for split in ("train", "val"):
            folder = root / split
            if not folder.is_dir():
                problems.append(f"missing folder {folder}")
            elif not _class_dirs(folder):
                problems.append(f"no class folders in {folder}")
        if problems:
            raise FileNotFoundError(
                f"ImageFolderDataModule(data_dir={self.data_dir!r}): {'; '.join(problems)}.\n"
                + _LAYOUT
            )
        unknown = sorted(set(_class_dirs(root / "val")) - set(_class_dirs(root / "train")))
        if unknown:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise FileNotFoundError(
                f"{root / 'val'} has class folders absent from {root / 'train'}: {shown}.\n"
                + _LAYOUT
            )

    def prepare_data(self) -> None:
        """Check the folder layout (nothing is downloaded)."""
        self._check_layout()

    def _eval_transform(self) -> transforms.Compose:
        return transforms.Compose(
            [
                transforms.Resize(int(self.image_size * 256 / 224)),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def _train_transform(self) -> transforms.Compose:
        if not self.augment:
            return self._eval_transform()
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(self.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def _class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def _build_train_dataset(self) -> Dataset:
        return _FixedClassesImageFolder(
            Path(self.data_dir) / "train", self._class_to_idx(), self._train_transform()
        )

    def _build_test_dataset(self) -> Dataset:
        return _FixedClassesImageFolder(
            Path(self.data_dir) / "val", self._class_to_idx(), self._eval_transform()
        )

    def _build_train_eval_dataset(self) -> Dataset:
        return _FixedClassesImageFolder(
            Path(self.data_dir) / "train", self._class_to_idx(), self._eval_transform()
        )
