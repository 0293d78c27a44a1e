"""Shared base of the data modules that read image files from ``data_dir`` (or download
them) and augment the training split with a padded random crop and a horizontal flip."""

from __future__ import annotations

from typing import Any

from torchvision import transforms

from distpro_lightning.data.base import SplitDataModule

__all__ = ["ImageFileDataModule"]


class ImageFileDataModule(SplitDataModule):
    """A `SplitDataModule` of square images in files under ``data_dir``.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size``, ``crop_padding``,
    ``mean`` and ``std``. Training transform: ``RandomCrop(image_size,
    padding=crop_padding)`` + ``RandomHorizontalFlip`` (if ``augment``) + ``ToTensor`` +
    ``Normalize(mean, std)``; evaluation transform: ``ToTensor`` + the same ``Normalize``.

    Args:
        data_dir: Directory holding (or receiving) the dataset files.
        download: Download with torchvision if the files are missing.
        augment: Random crop + horizontal flip on the training split.
        **kwargs: the shared options of `SplitDataModule` (``batch_size``, ``mode``,
            ``subset``, ...).
    """

    crop_padding: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(
        self, data_dir: str = "data", download: bool = False, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.download = download
        self.augment = augment

    def eval_transform(self) -> transforms.Compose:
        """``ToTensor`` + ``Normalize(mean, std)``."""
        return transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        )

    def train_transform(self) -> transforms.Compose:
        """The augmentation (if ``augment``), then `eval_transform`'s steps."""
        steps: list[Any] = []
        if self.augment:
            steps += [
                transforms.RandomCrop(self.image_size, padding=self.crop_padding),
                transforms.RandomHorizontalFlip(),
            ]
        return transforms.Compose([*steps, *self.eval_transform().transforms])
