"""Tests of ``distpro_lightning.data``: search/retrain splits and every data module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import FASHION_SOURCE, needs_fashion
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from distpro_lightning.data import (
    DEBIAN_FASHION_MNIST_DIR,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    SplitDataModule,
    make_fake_cifar100,
    make_fake_image_folder,
    prepare_tiny_imagenet_val,
)
from distpro_lightning.data.fashion_mnist import FASHION_MNIST_FILES

DIGITS_TRAIN = 1397
DIGITS_TEST = 400


def _as_set(indices: torch.Tensor) -> set[int]:
    return set(indices.tolist())


# --------------------------------------------------------------------------- splits (digits)
@pytest.mark.parametrize("subset", [None, 300])
def test_search_split_disjoint_and_covering(subset: int | None) -> None:
    dm = DigitsDataModule(mode="search", subset=subset, seed=0, batch_size=16)
    dm.setup("fit")
    train, val = _as_set(dm.train_indices), _as_set(dm.search_val_indices)
    pool = subset or DIGITS_TRAIN
    assert not train & val
    assert len(train) + len(val) == pool
    assert len(val) == round(0.2 * pool)
    if subset is None:
        assert train | val == set(range(DIGITS_TRAIN))
    else:
        # The subset pool is the same in retrain mode: search splits exactly that pool.
        retrain = DigitsDataModule(mode="retrain", subset=subset, seed=0)
        assert train | val == _as_set(retrain.train_indices)
        assert max(train | val) < DIGITS_TRAIN
    assert len(dm.train_dataloader().dataset) == len(train)
    assert len(dm.search_val_dataloader().dataset) == len(val)


@pytest.mark.parametrize("subset", [None, 300])
def test_search_split_deterministic_per_seed(subset: int | None) -> None:
    a = DigitsDataModule(mode="search", subset=subset, seed=0)
    b = DigitsDataModule(mode="search", subset=subset, seed=0)
    c = DigitsDataModule(mode="search", subset=subset, seed=1)
    assert torch.equal(a.train_indices, b.train_indices)
    assert torch.equal(a.search_val_indices, b.search_val_indices)
    assert not torch.equal(a.search_val_indices, c.search_val_indices)


def test_search_val_fraction() -> None:
    dm = DigitsDataModule(mode="search", search_val_fraction=0.5, subset=100)
    assert len(dm.train_indices) == len(dm.search_val_indices) == 50


def test_retrain_serves_full_training_set() -> None:
    dm = DigitsDataModule(mode="retrain")
    dm.setup("fit")
    assert torch.equal(dm.train_indices, torch.arange(DIGITS_TRAIN))
    assert dm.search_val_indices is None
    loader = dm.train_dataloader()
    assert len(loader.dataset) == DIGITS_TRAIN
    assert sum(len(y) for _, y in loader) == DIGITS_TRAIN
    assert dm.val_dataloader() == []  # the test split never validates (issue 14)
    assert len(dm.test_dataloader().dataset) == DIGITS_TEST


def test_retrain_subset_limits_train_and_test() -> None:
    dm = DigitsDataModule(mode="retrain", subset=50)
    assert len(dm.train_indices) == 50
    assert len(dm.test_indices) == 50
    assert len(dm.test_dataloader().dataset) == 50
    assert len(set(dm.test_indices.tolist())) == 50


def test_search_val_dataloader_raises_in_retrain_mode() -> None:
    dm = DigitsDataModule(mode="retrain")
    with pytest.raises(RuntimeError, match="only in search mode"):
        dm.search_val_dataloader()
    dm.setup("fit")
    with pytest.raises(RuntimeError, match="mode='search'"):
        dm.search_val_dataloader()


def test_search_val_dataloader_before_and_after_setup() -> None:
    dm = DigitsDataModule(mode="search", batch_size=16)
    loader = dm.search_val_dataloader()  # no setup() yet
    assert loader.drop_last
    assert isinstance(loader.sampler, RandomSampler)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 8, 8)
    dm.setup("fit")
    again = dm.search_val_dataloader()
    assert len(again.dataset) == len(loader.dataset)
    assert all(len(y) == 16 for _, y in again)  # drop_last: only full batches


def test_search_split_settings_in_retrain_mode_are_said_to_have_no_effect(recwarn) -> None:
    with pytest.warns(UserWarning, match=r"search_val_fraction=\.\.\.\) has no effect in mode"):
        DigitsDataModule(search_val_fraction=0.5)
    with pytest.warns(UserWarning, match=r"DigitsDataModule\(search_val_batch_size=\.\.\.\)"):
        DigitsDataModule(search_val_batch_size=4)
    recwarn.clear()
    DigitsDataModule(mode="search", search_val_fraction=0.5, search_val_batch_size=4)
    DigitsDataModule()
    assert not [w for w in recwarn if "has no effect" in str(w.message)]


def test_search_val_batch_size_option_and_clamping() -> None:
    dm = DigitsDataModule(mode="search", batch_size=8, search_val_batch_size=5)
    assert dm.search_val_dataloader().batch_size == 5
    small = DigitsDataModule(mode="search", subset=20, batch_size=128)
    with pytest.warns(UserWarning, match="reducing"):
        loader = small.search_val_dataloader()
    assert loader.batch_size == 4
    assert len(list(loader)) == 1


def test_train_dataloader_is_plain_shuffled_loader() -> None:
    dm = DigitsDataModule(mode="search", batch_size=32)
    loader = dm.train_dataloader()
    assert type(loader) is DataLoader
    assert isinstance(loader.sampler, RandomSampler)
    assert loader.batch_size == 32
    assert not isinstance(dm.val_dataloader().sampler, RandomSampler)


def test_distributed_search_val_shards_are_disjoint() -> None:
    dm = DigitsDataModule(mode="search", batch_size=8, seed=3)
    shards = []
    for rank in range(2):
        loader = dm.search_val_dataloader(distributed=True, num_replicas=2, rank=rank)
        sampler = loader.sampler
        assert isinstance(sampler, DistributedSampler)
        assert sampler.shuffle and sampler.drop_last and sampler.seed == 3
        assert loader.drop_last
        sampler.set_epoch(0)
        shards.append(list(sampler))
    n_val = len(dm.search_val_indices)
    assert len(shards[0]) == len(shards[1]) == n_val // 2
    assert not set(shards[0]) & set(shards[1])
    # set_epoch changes the order (the caller must call it when cycling the loader).
    sampler.set_epoch(1)
    assert list(sampler) != shards[1]
    # Shard positions index the search-validation subset, hence only held-out samples.
    held_out = dm.search_val_indices
    assert _as_set(held_out[torch.tensor(shards[0] + shards[1])]) <= _as_set(held_out)


def test_changing_mode_after_setup_recomputes_split() -> None:
    dm = DigitsDataModule(mode="retrain")
    dm.setup("fit")
    assert len(dm.train_indices) == DIGITS_TRAIN
    dm.mode = "search"
    assert len(dm.train_indices) + len(dm.search_val_indices) == DIGITS_TRAIN
    assert len(dm.search_val_dataloader().dataset) == len(dm.search_val_indices)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        DigitsDataModule(mode="meta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="search_val_fraction"):
        DigitsDataModule(search_val_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        DigitsDataModule(mode="search", subset=2, search_val_fraction=0.1).setup("fit")


def test_digits_offline_batches_and_properties() -> None:
    with pytest.warns(UserWarning, match=r"data_dir='ignored'\) has no effect"):
        DigitsDataModule(data_dir="ignored", batch_size=64)
    dm = DigitsDataModule(batch_size=64)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 8)
    assert dm.input_shape == (1, 8, 8)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.test_dataloader()))  # retrain mode validates on nothing (issue 14)
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    # The fixed test split does not depend on the seed.
    other = DigitsDataModule(seed=5)
    other.setup("test")
    assert torch.equal(dm.test_dataset[0][0], other.test_dataset[0][0])
    assert dm.hparams["batch_size"] == 64


def test_constructor_signatures_work_with_jsonargparse() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SplitDataModule, "data")
    cfg = parser.parse_args(
        [
            "--data=distpro_lightning.data.DigitsDataModule",
            "--data.mode=search",
            "--data.subset=100",
            "--data.search_val_batch_size=7",
        ]
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm, DigitsDataModule)
    assert dm.mode == "search" and dm.subset == 100 and dm.search_val_batch_size == 7


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_trainer_runs_on_data_module() -> None:
    from lightning.pytorch import LightningModule, Trainer

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = DigitsDataModule(mode="search", batch_size=32)
    trainer = Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.datamodule is dm
    assert len(dm.search_val_dataloader().dataset) == len(dm.search_val_indices)


# --------------------------------------------------------------------------- Fashion-MNIST
@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir in which ``prepare_data`` installed the real files once for this module."""
    assert FASHION_SOURCE is not None
    root = tmp_path_factory.mktemp("fashion")
    (root / "src").mkdir()
    for name in os.listdir(FASHION_SOURCE):
        (root / "src" / name).symlink_to(FASHION_SOURCE / name)
    data_dir = root / "data"
    dm = FashionMNISTDataModule(data_dir=str(data_dir))
    dm.system_dirs = (str(root / "src"),)
    dm.prepare_data()
    return data_dir


@needs_fashion
def test_fashion_mnist_real_files(fashion_dir: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(fashion_dir), mode="search", batch_size=32)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    dm.prepare_data()  # already installed: no-op
    dm.setup("fit")
    assert len(dm.train_indices) == 48_000 and len(dm.search_val_indices) == 12_000
    assert len(dm.test_indices) == 10_000
    for loader in (dm.train_dataloader(), dm.search_val_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) <= 9
    # Normalization roughly centres the (un-augmented) test images.
    x = torch.stack([dm.test_dataset[i][0] for i in range(256)])
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3


@needs_fashion
def test_fashion_mnist_default_lookup_installs_into_raw(tmp_path: Path) -> None:
    """With the Debian package present, an empty data_dir works out of the box."""
    if not Path(DEBIAN_FASHION_MNIST_DIR).is_dir():
        pytest.skip(f"{DEBIAN_FASHION_MNIST_DIR} absent")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), subset=64, batch_size=16, augment=False)
    dm.prepare_data()
    assert sorted(os.listdir(tmp_path / "FashionMNIST" / "raw")) == sorted(FASHION_MNIST_FILES)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (16, 1, 28, 28)
    assert len(dm.test_indices) == 64


@needs_fashion
def test_fashion_mnist_gz_files_directly_in_data_dir(tmp_path: Path) -> None:
    assert FASHION_SOURCE is not None
    for name in FASHION_MNIST_FILES:  # symlinks: nothing big is copied
        for candidate in (FASHION_SOURCE / name, FASHION_SOURCE / f"{name}.gz"):
            if candidate.is_file():
                (tmp_path / candidate.name).symlink_to(candidate)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), subset=40, batch_size=8)
    dm.system_dirs = ()
    x, _ = next(iter(dm.train_dataloader()))  # lazily prepares + sets up
    assert x.shape == (8, 1, 28, 28)


def test_fashion_mnist_missing_error_lists_searched_paths(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "data"))
    dm.system_dirs = (str(nowhere),)
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    for place in (tmp_path / "data" / "FashionMNIST" / "raw", tmp_path / "data", nowhere):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message
    with pytest.raises(FileNotFoundError):
        dm.setup("fit")


def test_fashion_mnist_default_search_dirs_include_debian() -> None:
    dm = FashionMNISTDataModule(data_dir="somewhere")
    assert Path(DEBIAN_FASHION_MNIST_DIR) in dm.search_dirs()


# --------------------------------------------------------------------------- CIFAR-100
def test_cifar100_fake_files(tmp_path: Path) -> None:
    root = make_fake_cifar100(tmp_path, n_train=20, n_test=10)
    assert sorted(os.listdir(root / "cifar-100-python")) == ["meta", "test", "train"]
    dm = CIFAR100DataModule(data_dir=str(root), mode="search", batch_size=4)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (100, 3, 32)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_indices) == 16 and len(dm.search_val_indices) == 4
    assert len(dm.test_indices) == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert int(y.min()) >= 0 and int(y.max()) <= 99
    x, y = next(iter(dm.search_val_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    x, y = next(iter(dm.test_dataloader()))
    assert y.tolist() == [0, 1, 2, 3]  # fake label of image i is i % 100, not shuffled
    # Pixels are stored as R, G, B planes: the eval transform sees the written image.
    full = dm.test_dataset.dataset
    assert full.classes[0] == "class_00" and full.data.shape == (10, 32, 32, 3)


def test_cifar100_missing_error(tmp_path: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "download=True" in message and "cifar-100-python/" in message


# --------------------------------------------------------------------------- ImageFolder
def test_image_folder_fake_tree(tmp_path: Path) -> None:
    root = make_fake_image_folder(tmp_path, num_classes=3, per_class=4, size=32)
    dm = ImageFolderDataModule(data_dir=str(root), image_size=24, batch_size=4, mode="search")
    assert dm.num_classes == 3  # before setup, from the folder count
    assert (dm.in_channels, dm.image_size) == (3, 24)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_indices) + len(dm.search_val_indices) == 12
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 24, 24)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 24, 24)
    x, _ = next(iter(dm.val_dataloader()))  # held-out train/ images, eval transform
    assert x.shape == (len(dm.search_val_indices), 3, 24, 24)
    labels = [label for _, label in dm.test_dataset]
    assert labels == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_val_reuses_train_labels(tmp_path: Path) -> None:
    root = make_fake_image_folder(tmp_path, num_classes=3, per_class=2, size=16)
    for image in (root / "val" / "class_0").iterdir():  # val lacks class_0 entirely
        image.unlink()
    (root / "val" / "class_0").rmdir()
    dm = ImageFolderDataModule(data_dir=str(root), image_size=16, augment=False)
    assert dm.num_classes == 3
    assert sorted({label for _, label in dm.test_dataset}) == [1, 2]


def test_image_folder_missing_error_lists_layout(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "<data_dir>/train/<class_name>/" in message
    with pytest.raises(FileNotFoundError):
        _ = dm.num_classes


def test_prepare_tiny_imagenet_val(tmp_path: Path) -> None:
    root = make_fake_image_folder(tmp_path / "tiny", num_classes=2, per_class=2, size=8)
    # Re-create Tiny-ImageNet's flat val/: val/images/*.JPEG + val/val_annotations.txt.
    images = root / "val" / "images"
    images.mkdir()
    lines = []
    for wnid in ["class_0", "class_1"]:
        for image in sorted((root / "val" / wnid).iterdir()):
            name = f"val_{len(lines)}.JPEG"
            image.rename(images / name)
            lines.append(f"{name}\t{wnid}\t0\t0\t7\t7")
        (root / "val" / wnid).rmdir()
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    unsorted = ImageFolderDataModule(data_dir=str(root), image_size=8)
    with pytest.raises(FileNotFoundError, match="prepare_tiny_imagenet_val"):
        unsorted.prepare_data()

    assert prepare_tiny_imagenet_val(root) == 4
    assert prepare_tiny_imagenet_val(root) == 0  # idempotent
    assert not images.exists()
    assert sorted(os.listdir(root / "val" / "class_1")) == ["val_2.JPEG", "val_3.JPEG"]
    dm = ImageFolderDataModule(data_dir=str(root), image_size=8, batch_size=2)
    dm.prepare_data()
    assert [label for _, label in dm.test_dataset] == [0, 0, 1, 1]


def test_prepare_tiny_imagenet_val_missing_annotations(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        prepare_tiny_imagenet_val(tmp_path)


# --------------------------------------------------------------------------- leakage guard
@pytest.mark.parametrize("mode", ["search", "retrain"])
@pytest.mark.parametrize("val_fraction", [None, 0.1])
def test_validation_is_held_out_training_data_never_test(mode, val_fraction) -> None:
    dm = DigitsDataModule(mode=mode, val_fraction=val_fraction, subset=300, seed=3)
    loader = dm.val_dataloader()
    if mode == "retrain" and val_fraction is None:
        assert loader == [] and dm.val_indices is None
        assert len(dm.train_indices) == 300  # trains on the whole pool
        return
    val = _as_set(dm.val_indices)
    assert val and not val & _as_set(dm.train_indices)  # never trained on
    # the loader's samples are those training images, not test images
    train_x = dm._train_full.tensors[0]
    xs = torch.cat([x for x, _ in loader])
    assert torch.equal(xs, train_x[dm.val_indices])
    test_x = dm.test_dataset.dataset.tensors[0]
    matches = (xs[:, None] == test_x[None]).flatten(2).all(-1).any(-1)
    duplicates = (train_x[dm.val_indices][:, None] == test_x[None]).flatten(2).all(-1).any(-1)
    assert torch.equal(matches, duplicates)  # only images the training set also holds
    if val_fraction is not None:  # the same images validate the search and its retrain
        other = DigitsDataModule(
            mode="retrain" if mode == "search" else "search",
            val_fraction=val_fraction,
            subset=300,
            seed=3,
        )
        assert torch.equal(other.val_indices, dm.val_indices)
        assert not val & _as_set(other.train_indices)
        if mode == "search":
            assert not val & _as_set(dm.search_val_indices)
    else:
        assert torch.equal(dm.val_indices, dm.search_val_indices)


def test_val_fraction_checked() -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=1.0)
    dm = DigitsDataModule(val_fraction=0.001, subset=100)
    with pytest.raises(ValueError, match="empty part"):
        dm.setup("fit")


def test_fit_validates_on_held_out_training_images_and_tests_on_test(tmp_path) -> None:
    from conftest import make_module, quiet_trainer

    dm = DigitsDataModule(mode="retrain", val_fraction=0.2, subset=160, batch_size=32)
    module = make_module(transforms=["conv_bn"])
    seen: dict[str, int] = {}

    from lightning.pytorch.callbacks import Callback

    class Count(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *_):
            seen["val"] = seen.get("val", 0) + len(batch[1])

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *_):
            seen["test"] = seen.get("test", 0) + len(batch[1])

    trainer = quiet_trainer(
        max_epochs=1, num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[Count()]
    )
    trainer.fit(module, datamodule=dm)
    assert seen == {"val": 32}  # 20 % of 160, no test image
    trainer.test(module, datamodule=dm, verbose=False)
    assert seen["test"] == 160
