"""timm models by name, their stage taps from timm's feature_info, and a search and a replay
on the paper's ViT pair and a timm CNN pair at a tiny size (random weights)."""

from __future__ import annotations

import pytest
import torch
from conftest import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from distpro_lightning import (
    DistillationConfig,
    DistProModule,
    OptimizerConfig,
    ProcessScheduleCallback,
    ProcessSearchCallback,
)
from distpro_lightning.models import create
from distpro_lightning.pathways.taps import auto_taps

timm = pytest.importorskip("timm")

VIT_B = "timm/vit_base_patch16_224?img_size=32,patch_size=8,depth=3"
DEIT_T = "timm/deit_tiny_patch16_224?img_size=32,patch_size=8,depth=3"


def test_cnn_stage_taps_come_from_feature_info_without_the_stem():
    net = create("timm/resnet18", num_classes=10, in_channels=3)
    assert net.stage_names == ["layer1", "layer2", "layer3", "layer4"]
    plain = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=10)
    assert auto_taps(plain, torch.zeros(2, 3, 32, 32)) == [
        "blocks.1", "blocks.2", "blocks.4", "blocks.6"
    ]  # fmt: skip


def test_vit_taps_are_the_last_block_of_each_third():
    twelve = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8)
    assert auto_taps(twelve, torch.zeros(2, 3, 32, 32)) == ["blocks.3", "blocks.7", "blocks.11"]
    assert create(VIT_B, num_classes=10).stage_names == ["blocks.0", "blocks.1", "blocks.2"]


def test_unknown_or_malformed_timm_names_say_what_to_write():
    with pytest.raises(ValueError, match="Did you mean 'timm/resnet18'"):
        create("timm/resnet18x", num_classes=10)
    with pytest.raises(ValueError, match="is not key=value"):
        create("timm/resnet18?img_size", num_classes=10)
    # issue 37, case 21: the case of a name, and weights asked for in the name
    with pytest.raises(ValueError, match="Did you mean 'timm/resnet10t'"):
        create("timm/RESNET10T", num_classes=10)
    with pytest.raises(ValueError, match="pretrained is set by the library .* never downloaded"):
        create("timm/resnet18?pretrained=true", num_classes=10)


def _loader(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    )
    return DataLoader(data, batch_size=4)


@pytest.mark.parametrize(
    "student, teacher, optimizer, pathways",
    [(DEIT_T, VIT_B, "adamw", 9), ("timm/resnet10t", "timm/resnet18", "sgd", 16)],
    ids=["vit_b-deit_tiny", "resnet18-resnet10t"],
)
def test_timm_pair_searches_and_replays(tmp_path, student, teacher, optimizer, pathways):
    torch.manual_seed(0)
    kw = dict(
        num_classes=10,
        in_channels=3,
        distillation=DistillationConfig(input_shape=[3, 32, 32], transforms=["conv_bn"]),
        optimizer=OptimizerConfig(name=optimizer, lr=1e-3),
    )
    m = DistProModule(student=student, teacher=teacher, **kw)
    assert m.num_pathways == pathways
    search = ProcessSearchCallback(
        hypergradient="exact", output={"save_path": str(tmp_path / "p.json"), "plot": False}
    )
    search.search_val_loader = _loader(seed=1)
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[search]).fit(m, _loader())
    rows = search.process.logits
    assert rows.shape == (2, pathways) and not torch.equal(rows[0], torch.ones(pathways))
    replayed = DistProModule(student=student, teacher=teacher, **kw)
    replay = ProcessScheduleCallback(process=str(tmp_path / "p.json"), plot=False)
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[replay]).fit(replayed, _loader())
    assert torch.equal(replayed.alpha_logits, rows[-1])
