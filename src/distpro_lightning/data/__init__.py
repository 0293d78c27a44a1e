"""Lightning data modules for DistPro: official splits plus the seeded search/retrain split.

Every data module derives from `SplitDataModule`: in ``mode="search"`` the training
set is split 80/20 (seeded) into the student's training data and the held-out data of the
meta-gradient (`SplitDataModule.search_val_dataloader`); in ``mode="retrain"`` the
whole training set is used. Validation images are held out from the training set (the
search split, or ``val_fraction`` of it in both modes); the official test split is served
only by the test loader (``trainer.test`` / ``distpro test``).
"""

from distpro_lightning.data.base import Mode, SplitDataModule
from distpro_lightning.data.cifar100 import CIFAR100DataModule, CIFAR100Pickles
from distpro_lightning.data.digits import DigitsDataModule
from distpro_lightning.data.fake import make_fake_cifar100, make_fake_image_folder
from distpro_lightning.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, FashionMNISTDataModule
from distpro_lightning.data.image_folder import ImageFolderDataModule, prepare_tiny_imagenet_val
from distpro_lightning.data.images import ImageFileDataModule

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "CIFAR100DataModule",
    "CIFAR100Pickles",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFileDataModule",
    "ImageFolderDataModule",
    "Mode",
    "SplitDataModule",
    "make_fake_cifar100",
    "make_fake_image_folder",
    "prepare_tiny_imagenet_val",
]
