"""DistProModule: taps, pathway grid, heads, distances, normalisations, pruning, teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FASHION_SOURCE, TinyViT, make_module, needs_fashion, quiet_trainer
from lightning.pytorch import LightningModule
from torch import nn

from distpro_lightning import DistillationConfig, DistProMixin, DistProModule, load_teacher
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.functional.losses import hcl_loss, hinton_kd_loss
from distpro_lightning.models import create
from distpro_lightning.pathways.taps import FeatureTaps, auto_taps


def test_pathway_count_and_names():
    m = make_module()
    assert m.num_pathways == 3 * 3 * 3
    assert m.pathway_names[0] == "layer1->layer1:conv_bn"
    assert "layer2->layer3:attn2" in m.pathway_names
    assert len(set(m.pathway_names)) == 27
    m2 = make_module(connections="lower_to_higher", transforms=["conv_bn"])
    assert m2.pathway_names == [
        "layer1->layer1:conv_bn",
        "layer1->layer2:conv_bn",
        "layer1->layer3:conv_bn",
        "layer2->layer2:conv_bn",
        "layer2->layer3:conv_bn",
        "layer3->layer3:conv_bn",
    ]
    m3 = make_module(connections=[(0, 2), (2, 0)], transforms=["attn2", "attn3"], response_kd=True)
    assert m3.pathway_names == [
        "layer1->layer3:attn2",
        "layer1->layer3:attn3",
        "layer3->layer1:attn2",
        "layer3->layer1:attn3",
        "logits->logits:kd",
    ]
    assert m3.alpha_logits.shape == (5,) and torch.all(m3.alpha_logits == 1)
    assert "alpha_logits" in dict(m3.named_buffers())
    assert "alpha_logits" not in dict(m3.named_parameters())


def test_heads_match_teacher_shapes():
    m = make_module(input_shape=[1, 28, 28])
    x = torch.randn(4, 1, 28, 28)
    teacher = m.teacher_outputs(x)
    with m._student_taps.capture() as store:
        m.student(x)
    feats = m._student_taps.ordered(store)
    for spec, head in zip(m.pathway_specs, m.distill_heads.heads):
        target = teacher.features[spec.teacher_idx]
        out = head(feats[spec.student_idx], tuple(target.shape[-2:]))
        assert out.shape == target.shape, spec.name


def _expected_weights(name, a, g=1.0):
    p = a.numel()
    if name == "biased_softmax":
        e = torch.exp(a)
        return e / (e.sum() + math.exp(g))
    if name == "softmax":
        return torch.exp(a) / torch.exp(a).sum()
    if name == "l1_plus_one":
        return a / (a.abs().sum() + 1)
    if name == "l1":
        return a / a.abs().sum()
    if name == "sigmoid":
        return 1 / (1 + torch.exp(-a))
    return torch.full((p,), 1.0 / p)


@pytest.mark.parametrize(
    "name", ["biased_softmax", "softmax", "l1_plus_one", "l1", "sigmoid", "uniform"]
)
def test_alpha_weights_formulas(name):
    bias = 0.7 if name == "biased_softmax" else 1.0  # only the biased softmax has a bias
    m = make_module(
        normalization=name, kd_weight=0.5, normalization_bias=bias, transforms=["conv_bn"]
    )
    a = torch.linspace(-1.0, 2.0, 9)
    expected = _expected_weights(name, a, bias) * 0.5 * 9
    torch.testing.assert_close(m.alpha_weights(a), expected)
    m.alpha_logits.copy_(a)
    torch.testing.assert_close(m.alpha_weights(), expected)
    # differentiable in the logits
    a2 = a.clone().requires_grad_(True)
    m.alpha_weights(a2).sum().backward()
    assert a2.grad is not None
    unscaled = make_module(normalization=name, scale_by_num_pathways=False, transforms=["conv_bn"])
    torch.testing.assert_close(unscaled.alpha_weights(a), _expected_weights(name, a, 1.0))


@pytest.mark.parametrize("scaled", [True, False])
def test_kd_weight_for_scale_gives_a_module_of_that_weight_scale(scaled):
    """The kd_weight the replay warning suggests: a module built with it has the scale."""
    kw = dict(connections=[(0, 0), (1, 1), (2, 2)], transforms=["conv_bn"])
    m = make_module(scale_by_num_pathways=scaled, kd_weight=0.7, **kw)
    kd_weight = m.kd_weight_for_scale(6.0)
    again = make_module(scale_by_num_pathways=scaled, kd_weight=kd_weight, **kw)
    assert again.weight_scale == pytest.approx(6.0)
    assert kd_weight == pytest.approx(2.0 if scaled else 6.0)


def test_training_loss_is_ce_plus_weighted_pathways():
    torch.manual_seed(0)
    m = make_module(response_kd=True)
    m.alpha_logits.copy_(torch.rand(m.num_pathways) * 2)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    m.eval()  # deterministic BN so two forwards agree
    loss, task, losses, logits = m.training_loss((x, y))
    torch.testing.assert_close(task, F.cross_entropy(logits, y))
    torch.testing.assert_close(
        loss, F.cross_entropy(logits, y) + (m.alpha_weights() * losses).sum()
    )
    t = m.teacher_outputs(x)
    torch.testing.assert_close(losses[-1], hinton_kd_loss(logits, t.logits, 4.0))
    spec = m.pathway_specs[5]
    with m._student_taps.capture() as store:
        m.student(x)
    f = m._student_taps.ordered(store)[spec.student_idx]
    target = t.features[spec.teacher_idx]
    head_out = m.distill_heads.heads[5](f, tuple(target.shape[-2:]))
    torch.testing.assert_close(losses[5], hcl_loss(head_out, target))


@pytest.mark.parametrize("size", [2, 7, 8, 14, 28, 5])
def test_hcl_definition(size):
    """HCL against its definition (pooling s and t separately, each level from the full map)."""
    torch.manual_seed(size)
    s, t = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    expected = F.mse_loss(s, t)
    total, w = 1.0, 1.0
    for level in (4, 2, 1):
        if level >= size:
            continue
        w /= 2
        expected = expected + w * F.mse_loss(
            F.adaptive_avg_pool2d(s, level), F.adaptive_avg_pool2d(t, level)
        )
        total += w
    torch.testing.assert_close(hcl_loss(s, t), expected / total)
    tokens_s, tokens_t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    torch.testing.assert_close(hcl_loss(tokens_s, tokens_t), F.mse_loss(tokens_s, tokens_t))


def test_pruning_skips_computation_and_gradients():
    m = make_module(prune_threshold=0.5)
    logits = torch.ones(m.num_pathways)
    pruned = [0, 4, 13, 26]
    logits[pruned] = 0.2
    m.alpha_logits.copy_(logits)
    calls = [0] * m.num_pathways
    for i, head in enumerate(m.distill_heads.heads):
        head.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    loss, _, losses, _ = m.training_loss((x, y))
    loss.backward()
    for i in range(m.num_pathways):
        head_grads = [p.grad for p in m.distill_heads.heads[i].parameters()]
        if i in pruned:
            assert calls[i] == 0 and losses[i] == 0
            assert all(g is None for g in head_grads)
        else:
            assert calls[i] == 1 and losses[i] > 0
            assert all(g is not None for g in head_grads)


def test_teacher_frozen_and_eval_during_fit():
    m = make_module(transforms=["conv_bn"])
    modes = []
    m.teacher.register_forward_pre_hook(lambda mod, a: modes.append(mod.training))
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, val_check_interval=2)
    with _no_eval_warning():
        trainer.fit(m, datamodule=DigitsDataModule(batch_size=32, subset=128))
    assert modes and not any(modes)
    assert all(not p.requires_grad and p.grad is None for p in m.teacher.parameters())
    after = m.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched too


class _no_eval_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.records = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        msgs = [str(r.message) for r in self.records]
        assert not any("eval mode" in msg for msg in msgs), msgs


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"Unknown student tap 'layer9'.*layer1"):
        make_module(student_taps=["layer1", "layer9"])
    with pytest.raises(ValueError, match="Closest valid names: layer2"):
        make_module(teacher_taps=["layr2"])
    with pytest.raises(ValueError, match=r"out of range: there are 3 teacher taps"):
        make_module(connections=[(0, 3)])
    with pytest.raises(ValueError, match="Unknown normalization 'softmx'"):
        make_module(normalization="softmx")
    with pytest.raises(ValueError, match="Unknown distance"):
        make_module(distance="cosine")
    with pytest.raises(ValueError, match="Unknown transform kind 'conv'"):
        make_module(transforms=["conv"])
    with pytest.raises(ValueError, match="Unknown connection rule"):
        make_module(connections="everything")
    with pytest.raises(ValueError, match="Did you mean"):
        make_module(student="resnet9")


def test_tap_firing_twice_is_an_error():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.block(self.block(x))

    net = Twice()
    taps = FeatureTaps(net, ["block"])
    with pytest.raises(RuntimeError, match="fired twice"), taps.capture():
        net(torch.randn(1, 1, 4, 4))


def test_auto_taps_torchvision_and_generic_models():
    r18 = create("tv_resnet18", 10)
    assert auto_taps(r18, torch.zeros(1, 3, 64, 64)) == [
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    # the heuristic (no declared stage names) finds the same stages
    del r18.stage_names
    assert auto_taps(r18, torch.zeros(1, 3, 64, 64)) == [
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    mb = create("tv_mobilenet_v2", 10)
    del mb.stage_names
    assert auto_taps(mb, torch.zeros(1, 3, 64, 64)) == [
        "features.1",
        "features.3",
        "features.6",
        "features.13",
        "features",  # the same tensor as features.18: the shallowest name wins
    ]


@pytest.mark.parametrize(
    ("teacher", "student", "connections", "expected_p"),
    [
        ("tv_resnet34", "tv_resnet18", "lower_to_higher", 15),
        ("tv_resnet50", "tv_mobilenet_v2", "lower_to_higher", 15),
        ("wrn_40_2", "wrn_16_2", "all", 9),
    ],
)
def test_pairs_from_the_zoo(teacher, student, connections, expected_p):
    size = 64 if teacher.startswith("tv_") else 32
    m = make_module(
        teacher=teacher,
        student=student,
        in_channels=3,
        input_shape=[3, size, size],
        connections=connections,
        transforms=["attn2"],
    )
    assert m.num_pathways == expected_p
    x = torch.randn(2, 3, size, size)
    logits, losses = m.distillation_losses(x)
    assert logits.shape == (2, 10) and losses.shape == (expected_p,)
    assert torch.isfinite(losses).all() and (losses > 0).all()
    (losses.sum() + logits.sum()).backward()
    assert all(p.grad is not None for p in m.distill_heads.parameters())


def test_token_transform_for_vit_students():
    m = DistProModule(
        student=TinyViT(16),
        teacher=TinyViT(32),
        num_classes=10,
        distillation=DistillationConfig(
            student_taps=["blocks.0", "blocks.1"],
            teacher_taps=["blocks.0", "blocks.1"],
            transforms=["token"],
            input_shape=[1, 8, 8],
            distance="mse",
        ),
    )
    assert m.num_pathways == 4
    logits, losses = m.distillation_losses(torch.randn(3, 1, 8, 8))
    assert losses.shape == (4,) and torch.isfinite(losses).all()


class UserNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.down1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x):
        return self.fc(self.down2(self.down1(self.stem(x))).mean((2, 3)))


class MixinUser(DistProMixin, LightningModule):
    """The documented three-line adoption of the mixin."""

    def __init__(self):
        super().__init__()
        self.student = UserNet(4)
        self.configure_distillation(UserNet(8), transforms=["conv_bn"], input_shape=[1, 8, 8])

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, kd_loss = self.distill(x)
        loss = self.task_loss(logits, y) + kd_loss
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_user_model_with_mixin_and_auto_taps():
    m = MixinUser()
    assert m.student_tap_names == ["stem", "down1", "down2"]
    assert m.num_pathways == 9
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(m, datamodule=DigitsDataModule(batch_size=32, subset=64))
    assert torch.isfinite(trainer.callback_metrics["train_loss"])


@needs_fashion
def test_short_fit_uniform_weights_lowers_loss(tmp_path):
    """Fashion-MNIST (real files), fixed uniform weights: the training loss goes down."""
    from lightning.pytorch.callbacks import Callback

    from distpro_lightning.data import FashionMNISTDataModule

    class Record(Callback):
        def __init__(self):
            self.losses = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    torch.manual_seed(0)
    m = make_module(
        normalization="uniform", input_shape=[1, 28, 28], transforms=["conv_bn"], lr=0.1
    )
    rec = Record()
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=64, subset=2048, augment=False)
    dm.system_dirs = (str(FASHION_SOURCE),)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[rec])
    trainer.fit(m, datamodule=dm)
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert torch.equal(m.alpha_logits, torch.ones(m.num_pathways))


def test_checkpoint_round_trip_without_teacher(tmp_path):
    m = make_module(transforms=["conv_bn"])
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(m, datamodule=DigitsDataModule(batch_size=32, subset=64))
    m.alpha_logits.copy_(torch.linspace(0, 1, m.num_pathways))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    keys = state["state_dict"].keys()
    assert not any(k.startswith("teacher.") for k in keys)
    assert any(k.startswith("distill_heads.") for k in keys)
    loaded = DistProModule.load_from_checkpoint(path, student="resnet8", teacher=m.teacher)
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(loaded.alpha_logits, m.alpha_logits)
    m_full = make_module(transforms=["conv_bn"], save_teacher=True)
    assert any(k.startswith("teacher.") for k in m_full.state_dict())


def test_teacher_from_classifier_checkpoint(tmp_path):
    from distpro_lightning import ClassifierModule

    clf = ClassifierModule(model="resnet14", num_classes=10, in_channels=1)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(clf, datamodule=DigitsDataModule(batch_size=16, subset=32))
    path = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(path)
    teacher = load_teacher(path)
    for k, v in clf.model.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k])
    m = make_module(teacher=str(path), transforms=["conv_bn"])
    assert torch.equal(m.teacher.state_dict()["fc.weight"], clf.model.state_dict()["fc.weight"])
    torch.save(clf.model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="does not name its architecture"):
        load_teacher(tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="missing keys|unexpected keys|shape mismatch"):
        load_teacher(tmp_path / "sd.pt", model="resnet8", num_classes=10, in_channels=1)
    assert isinstance(load_teacher(tmp_path / "sd.pt", "resnet14", 10, 1), nn.Module)


def test_ddp_with_pruning_requires_find_unused_parameters():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy

    from distpro_lightning.modules.distpro import check_ddp_pruning

    m = make_module(transforms=["conv_bn"], prune_threshold=0.5)
    with pytest.raises(RuntimeError, match="ddp_find_unused_parameters_true"):
        check_ddp_pruning(SimpleNamespace(strategy=DDPStrategy()), m)
    check_ddp_pruning(SimpleNamespace(strategy=DDPStrategy(find_unused_parameters=True)), m)
    check_ddp_pruning(SimpleNamespace(strategy=DDPStrategy()), make_module(transforms=["conv_bn"]))


def test_resuming_into_other_pathways_names_the_settings(tmp_path):
    """A checkpoint of a module with other transforms: one message naming the settings,
    not a screenful of missing state_dict keys; a `CheckpointError` (a `DistProError`),
    which ``distpro fit`` prints as one line."""
    from conftest import quiet_trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from distpro_lightning.cli.main import library_error
    from distpro_lightning.data import DigitsDataModule
    from distpro_lightning.errors import DistProError
    from distpro_lightning.modules.checkpoints import CheckpointError

    ckpts = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = quiet_trainer(max_steps=1, callbacks=[ckpts], enable_checkpointing=True)
    trainer.fit(make_module(transforms=["conv_bn"]), DigitsDataModule(batch_size=16, subset=64))
    other = make_module(transforms=["conv_bn", "attn2"])
    with pytest.raises(
        CheckpointError, match=r"other pathways .* transforms=\['conv_bn'\]"
    ) as info:
        quiet_trainer(max_steps=2).fit(
            other, DigitsDataModule(batch_size=16, subset=64), ckpt_path=str(tmp_path / "last.ckpt")
        )
    assert isinstance(info.value, DistProError) and library_error(info.value) is info.value
    with pytest.raises(CheckpointError, match="9 pathway logits there, 18 here"):
        type(other).load_from_checkpoint(
            tmp_path / "last.ckpt", distillation={"transforms": ["conv_bn", "attn2"]}
        )


def test_teacher_none_needs_and_takes_teacher_model():
    # load_from_checkpoint(ckpt, teacher=None) when the teacher file is gone: the message
    # names the fix, and with teacher_model the heads are sized by the untrained architecture
    kw = dict(student="resnet8", num_classes=10, in_channels=1)
    kw["distillation"] = {"input_shape": [1, 8, 8]}
    with pytest.raises(ValueError, match=r"teacher=None.*teacher_model='resnet20'"):
        DistProModule(teacher=None, **kw)
    blind = DistProModule(teacher=None, teacher_model="resnet14", **kw)
    assert blind.num_pathways == 27
    assert not any(p.requires_grad for p in blind.teacher.parameters())


def test_cosine_schedule_with_max_steps_alone_anneals_per_step_over_the_estimated_steps():
    """``Trainer(max_steps=4)`` without ``max_epochs``: the cosine schedule follows
    Lightning's ``estimated_stepping_batches`` (4), one value per optimizer step."""
    from lightning.pytorch.callbacks import Callback

    seen: list[float] = []

    class LrAtEachStep(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    m = make_module(transforms=["conv_bn"], lr=0.1, scheduler="cosine")
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[LrAtEachStep()])
    trainer.fit(m, datamodule=DigitsDataModule(batch_size=16, subset=128))
    expected = [0.05 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert seen == pytest.approx(expected)
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_a_checkpoint_path_that_is_no_file_is_left_to_lightnings_own_message(tmp_path):
    from distpro_lightning.modules.distpro import check_teacher_file

    assert check_teacher_file(tmp_path / "nowhere.ckpt") is None
    assert check_teacher_file(object()) is None  # a file object: Lightning reads it
