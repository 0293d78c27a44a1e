"""The ReviewKD pathway (``review_kd=True``): ReviewKD's fused review features as one pathway
of the search space, checked against a hand-written fusion and autograd through the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module
from hypergradient_reference import _batches, _unrolled_hypergradient

from distpro_lightning import ProcessSearchCallback
from distpro_lightning.functional.losses import hcl_loss
from distpro_lightning.pathways.review import REVIEW_PATHWAY_NAME, ReviewPathway


def _by_hand(abfs, s_feats, t_feats):
    """ReviewKD written out: levels + pooled last stage; ABFs deep to shallow, each fusing
    its reduced input with the upsampled residual of the level below; HCL per level."""
    s = [*s_feats, s_feats[-1].mean((2, 3), keepdim=True)]
    t = [*t_feats, t_feats[-1].mean((2, 3), keepdim=True)]
    total, residual = 0.0, None
    for i in reversed(range(len(s))):
        abf = abfs[i]
        x = abf.reduce(s[i])
        if abf.attention is not None and residual is not None:
            r = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = abf.attention(torch.cat([x, r], 1))
            x = x * z[:, :1] + r * z[:, 1:]
        out = abf.expand(x)
        if out.shape[-2:] != t[i].shape[-2:]:
            out = F.interpolate(out, size=t[i].shape[-2:], mode="nearest")
        total = total + hcl_loss(out, t[i])
        residual = x
    return total


def test_review_pathway_is_reviewkd_written_out():
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"], review_kd=True, response_kd=True)
    assert m.pathway_names[-2:] == [REVIEW_PATHWAY_NAME, "logits->logits:kd"]
    assert m.num_pathways == 9 + 2
    m.train()
    x = torch.randn(6, 1, 8, 8)
    teacher = m.teacher_outputs(x)
    with m._student_taps.capture() as store:
        m.student(x)
    s_feats = m._student_taps.ordered(store)
    _, losses = m.pathway_forward(x, teacher)
    expected = _by_hand(m.distill_heads.review.abfs, s_feats, teacher.features)
    assert losses[9].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses[9] > 0


@pytest.mark.parametrize("prune", [None, 0.5])
def test_exact_hypergradient_with_review_pathway_equals_unrolled_autograd(prune):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"], review_kd=True, prune_threshold=prune).double()
    m.train()
    m.alpha_logits.copy_(torch.rand(m.num_pathways, dtype=torch.float64) * 2)
    if prune is not None:
        m.alpha_logits[-1] = 0.1  # the review pathway pruned (its loss not computed)
    train, val = _batches(dtype=torch.float64)
    expected = _unrolled_hypergradient(m, train, val, lr=0.1)
    got = ProcessSearchCallback(hypergradient="exact").hypergradient_of(m, train, val, lr=0.1)
    assert expected.abs().max() > 0
    assert (got - expected).norm() / expected.norm() < 1e-4
    if prune is None:
        assert got[-1].abs() > 0  # the review pathway's weight moves


def test_pruned_review_pathway_is_not_computed():
    m = make_module(transforms=["conv_bn"], review_kd=True, prune_threshold=0.5)
    m.train()
    x = torch.randn(4, 1, 8, 8)
    active = [True] * 9 + [False]
    _, losses = m.pathway_forward(x, m.teacher_outputs(x), active)
    assert losses[-1] == 0
    losses.sum().backward()
    assert all(p.grad is None for p in m.distill_heads.review.parameters())


def test_review_pathway_refuses_token_features():
    with pytest.raises(ValueError, match="review_kd needs 4-D stage features"):
        ReviewPathway([[16, 8, 8], [12, 32]], [[16, 8, 8], [12, 32]])
