"""The ReviewKD baseline and the baselines expressed as DistProModule configurations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module, quiet_trainer

from distpro_lightning.baselines.reviewkd import ReviewKDModule
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.functional.losses import hcl_loss, hinton_kd_loss
from distpro_lightning.pathways.review import ABF, review_levels


def _reviewkd(**kw):
    torch.manual_seed(0)
    kwargs = dict(
        student="resnet8",
        teacher="resnet14",
        num_classes=10,
        in_channels=1,
        input_shape=[1, 8, 8],
        mid_channels=16,
        warmup_epochs=0,
    )
    kwargs.update(kw)
    return ReviewKDModule(**kwargs)


def test_abf_fuses_deep_to_shallow_with_attention():
    abf = ABF(8, 4, 6, fuse=True)
    x, residual = torch.randn(2, 8, 6, 6), torch.randn(2, 4, 3, 3)
    out, res = abf(x, residual)
    assert out.shape == (2, 6, 6, 6) and res.shape == (2, 4, 6, 6)
    # the residual enters through the attention: changing it changes the output
    out2, _ = abf(x, residual + 1.0)
    assert not torch.allclose(out, out2)
    assert ABF(8, 4, 6, fuse=False).attention is None


def test_reviewkd_levels_and_loss():
    m = _reviewkd()
    x = torch.randn(4, 1, 8, 8)
    teacher = m.teacher_levels(x)
    assert len(teacher) == 4 and teacher[-1].shape[-2:] == (1, 1)  # 3 stages + pooled
    m.eval()
    logits, loss = m.review_loss(x, teacher)
    # recompute the review loss independently, deep -> shallow
    with m._s_taps.capture() as store:
        m.student(x)
    feats = review_levels(m._s_taps.ordered(store))
    outs, res = [None] * 4, None
    for i in (3, 2, 1, 0):
        outs[i], res = m.abfs[i](feats[i], res)
    expected = sum(hcl_loss(o, t) for o, t in zip(outs, teacher))
    torch.testing.assert_close(loss, expected)
    assert logits.shape == (4, 10)


def test_reviewkd_trains_and_leaves_teacher_alone(tmp_path):
    m = _reviewkd()
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    trainer = quiet_trainer(
        max_epochs=3, limit_val_batches=0, default_root_dir=tmp_path, log_every_n_steps=1
    )
    dm = DigitsDataModule(batch_size=32, subset=256)
    trainer.fit(m, datamodule=dm)
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in before.items())
    assert not any(k.startswith("teacher.") for k in m.state_dict())
    path = tmp_path / "r.ckpt"
    trainer.save_checkpoint(path)
    loaded = ReviewKDModule.load_from_checkpoint(path, student="resnet8", teacher=m.teacher)
    assert torch.equal(loaded.abfs[0].expand[0].weight, m.abfs[0].expand[0].weight)
    result = trainer.test(m, datamodule=dm, verbose=False)[0]
    assert result["test/top1"] > 0.3  # learned something in 3 short epochs (chance: 0.1)


def test_reviewkd_rejects_unequal_tap_counts():
    with pytest.raises(ValueError, match="same length"):
        _reviewkd(student_taps=["layer1", "layer2"], teacher_taps=["layer1", "layer2", "layer3"])
    # an "auto" side with more stages keeps its deepest ones instead
    m = _reviewkd(student_taps=["layer1", "layer2"])
    assert m.frozen_teacher.taps.names == ["layer2", "layer3"]


def test_reviewkd_auto_taps_for_a_student_with_more_stages():
    # MobileNetV2 (4 stages) from a WRN (3 stages): "auto" keeps the student's 3 deepest,
    # whose spatial sizes differ from the teacher's; the fused features are resized to the
    # teacher's (nearest) before HCL.
    m = _reviewkd(
        student="mobilenet_v2", teacher="wrn_16_1", input_shape=[1, 28, 28], mid_channels=8
    )
    assert m._s_taps.names == ["stage2", "stage3", "stage4"]
    assert m.frozen_teacher.taps.names == ["block1", "block2", "block3"]
    x = torch.randn(4, 1, 28, 28)
    teacher = m.teacher_levels(x)
    m.eval()
    _, loss = m.review_loss(x, teacher)
    with m._s_taps.capture() as store:
        m.student(x)
    feats = review_levels(m._s_taps.ordered(store))
    assert [f.shape[-1] for f in feats[:3]] != [t.shape[-1] for t in teacher[:3]]
    outs, res = [None] * 4, None
    for i in (3, 2, 1, 0):
        outs[i], res = m.abfs[i](feats[i], res)
    expected = sum(
        hcl_loss(F.interpolate(o, size=t.shape[-2:], mode="nearest"), t)
        for o, t in zip(outs, teacher)
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert m.abfs[0].expand[0].weight.grad is not None


def test_hinton_kd_configuration_is_ce_plus_kd():
    m = make_module(connections="none", response_kd=True, normalization="uniform", kd_weight=1.0)
    assert m.pathway_names == ["logits->logits:kd"]
    m.eval()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    loss, task, losses, logits = m.training_loss((x, y))
    t = m.teacher(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + hinton_kd_loss(logits, t, 4.0))
    with pytest.raises(ValueError, match="No pathways"):
        make_module(connections="none")


def test_fitnet_hint_configuration():
    m = make_module(
        connections=[[1, 1]], transforms=["conv_bn"], distance="mse", normalization="uniform"
    )
    assert m.pathway_names == ["layer2->layer2:conv_bn"]
    torch.testing.assert_close(m.alpha_weights(), torch.ones(1))


@pytest.mark.parametrize("space", ["paper", "recommended"])
def test_recipe_baselines_are_themselves_whatever_the_search_space(space):
    """The recipes' Hinton KD and FitNet baselines keep their single pathway when the
    DistPro space they sit beside has the KD and review pathways (``space='recommended'``)."""
    from distpro_lightning.baselines.recipes import RecipeSettings, build_method

    settings = RecipeSettings(input_shape=(1, 28, 28), space=space)
    kd, _ = build_method("hinton_kd", "resnet8", "resnet14", None, settings)
    assert kd.pathway_names == ["logits->logits:kd"]
    hint, _ = build_method("fitnet", "resnet8", "resnet14", None, settings)
    assert [n.split("->")[1] for n in hint.pathway_names] == ["layer2:conv_bn"]


@pytest.mark.parametrize("given", [{"review_weight": -1.0}, {"warmup_epochs": -5}])
def test_negative_review_settings_are_refused(given):
    [name] = given
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0"):
        ReviewKDModule(student="resnet8", teacher="resnet14", in_channels=1, **given)
