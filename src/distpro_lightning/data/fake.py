"""Generators of tiny fake data sets on disk, in the real on-disk formats, for tests and demos.

The images are random but class-dependent (each class has its own mean colour), so a small
network can learn them, which keeps end-to-end smoke tests meaningful.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["make_fake_cifar100", "make_fake_image_folder"]


def _class_images(
    rng: np.random.Generator, labels: np.ndarray, size: int, num_classes: int
) -> np.ndarray:
    """``len(labels) x size x size x 3`` uint8 images whose mean colour depends on the label."""
    palette = np.random.default_rng(12345).integers(40, 216, size=(num_classes, 3))
    noise = rng.normal(0.0, 25.0, size=(len(labels), size, size, 3))
    images = palette[labels][:, None, None, :] + noise
    return np.clip(images, 0, 255).astype(np.uint8)


def make_fake_cifar100(
    root: str | os.PathLike, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> Path:
    """Write a tiny CIFAR-100 in the official ``cifar-100-python/`` pickle format.

    Creates ``root/cifar-100-python/{train,test,meta}`` like the extracted
    ``cifar-100-python.tar.gz``: ``train`` / ``test`` are pickled dicts with ``data``
    (``N x 3072`` uint8, R, G, B planes of 32 x 32), ``fine_labels``, ``coarse_labels``,
    ``filenames`` and ``batch_label``; ``meta`` holds ``fine_label_names`` (100) and
    ``coarse_label_names`` (20). Labels cycle through ``0..99`` (image ``i`` has label
    ``i % 100``). Readable by `CIFAR100DataModule` (not by
    ``torchvision.datasets.CIFAR100``, which also checks the official files' MD5 sums).

    Args:
        root: Directory to use as the data module's ``data_dir``.
        n_train: Number of training images.
        n_test: Number of test images.
        seed: Seed of the pixel noise.

    Returns:
        ``root`` as a `Path`.

    Example:

    ```python
    from distpro_lightning.data import CIFAR100DataModule
    from distpro_lightning.data.fake import make_fake_cifar100

    root = make_fake_cifar100("/tmp/fake_cifar", n_train=20, n_test=10)
    dm = CIFAR100DataModule(data_dir=str(root), batch_size=4)
    ```
    """
    root = Path(root)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        images = _class_images(rng, fine, 32, 100)  # N x H x W x C
        entry = {
            "batch_label": f"{split} batch (fake)",
            "filenames": [f"fake_{split}_{i}.png" for i in range(n)],
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": images.transpose(0, 3, 1, 2).reshape(n, 3 * 32 * 32),
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
    meta = {
        "fine_label_names": [f"class_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"superclass_{i:02d}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return root


def make_fake_image_folder(
    root: str | os.PathLike,
    num_classes: int = 3,
    per_class: int = 4,
    size: int = 32,
    val_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny ImageNet-style tree of PNGs: ``root/{train,val}/class_<k>/img_<i>.png``.

    Args:
        root: Directory to use as `ImageFolderDataModule`'s
            ``data_dir``.
        num_classes: Number of class folders (named ``class_0``, ``class_1``, ...).
        per_class: Training images per class.
        size: Side of the square RGB images.
        val_per_class: Validation images per class (defaults to ``per_class``).
        seed: Seed of the pixel noise.

    Returns:
        ``root`` as a `Path`.

    Example:

    ```python
    from distpro_lightning.data import ImageFolderDataModule
    from distpro_lightning.data.fake import make_fake_image_folder

    root = make_fake_image_folder("/tmp/fake_imagenet", num_classes=3, per_class=4)
    dm = ImageFolderDataModule(data_dir=str(root), image_size=32, batch_size=4)
    ```
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = {"train": per_class, "val": per_class if val_per_class is None else val_per_class}
    for split, n in counts.items():
        labels = np.repeat(np.arange(num_classes), n)
        images = _class_images(rng, labels, size, num_classes)
        for k in range(num_classes):
            (root / split / f"class_{k}").mkdir(parents=True, exist_ok=True)
        for j, (label, image) in enumerate(zip(labels, images)):
            Image.fromarray(image).save(root / split / f"class_{label}" / f"img_{j % n}.png")
    return root
