"""The virtual step follows Adam and AdamW exactly: the hypergradient equals autograd through
the unrolled optimizer step (float64), with weight decay and a non-empty optimizer state; the
unrolled step itself is checked against the real ``torch.optim`` step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module
from hypergradient_reference import _batches

from distpro_lightning.search.hypergradient import (
    HypergradientOptions,
    SearchBatches,
    compute_hypergradient,
)
from distpro_lightning.search.step import virtual_step_settings


def _reference_step(p, g, state, group, decoupled):
    """One Adam/AdamW step written from PyTorch's documented algorithm (differentiable)."""
    b1, b2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * state["exp_avg"] + (1 - b1) * g
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    t = int(state["step"]) + 1
    denom = (v.sqrt() / math.sqrt(1 - b2**t)) + eps
    return p - lr / (1 - b1**t) * m / denom


def _trained(opt_class, **kw):
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"], prune_threshold=None).double()
    m.train()
    student = dict(m.search_parameters().student)
    opt = opt_class(list(student.values()), **kw)
    for seed in (5, 6):  # a non-empty state: two real steps
        (x, y), _ = _batches(seed=seed, dtype=torch.float64)
        opt.zero_grad()
        F.cross_entropy(m.student(x), y).backward()
        opt.step()
    opt.zero_grad()
    m.alpha_logits.copy_(torch.rand(m.num_pathways, dtype=torch.float64) * 2)
    return m, opt, student


CASES = [
    (torch.optim.Adam, dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.0), False),
    (torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.05), False),
    (torch.optim.AdamW, dict(lr=0.02, betas=(0.9, 0.999), weight_decay=0.1), True),
]


@pytest.mark.parametrize("opt_class, kw, decoupled", CASES, ids=["adam", "adam_l2", "adamw"])
def test_reference_step_is_torch_optim_step(opt_class, kw, decoupled):
    m, opt, student = _trained(opt_class, **kw)
    (x, y), _ = _batches(seed=7, dtype=torch.float64)
    F.cross_entropy(m.student(x), y).backward()
    group = opt.param_groups[0]
    expected = {
        k: _reference_step(p.detach(), p.grad, opt.state[p], group, decoupled)
        for k, p in student.items()
    }
    opt.step()
    for k, p in student.items():
        assert torch.allclose(p.detach(), expected[k], rtol=1e-12, atol=1e-14), k


@pytest.mark.parametrize("opt_class, kw, decoupled", CASES, ids=["adam", "adam_l2", "adamw"])
@pytest.mark.parametrize("method", ["exact", "finite_difference"])
def test_hypergradient_equals_autograd_through_the_unrolled_adam_step(
    opt_class, kw, decoupled, method
):
    m, opt, student = _trained(opt_class, **kw)
    (x, y), (xv, yv) = _batches(seed=3, dtype=torch.float64)
    teacher = m.teacher_outputs(x)
    group = opt.param_groups[0]

    # the reference: autograd through the unrolled step
    a = m.alpha_logits.detach().clone().requires_grad_(True)
    theta = m.search_parameters()
    out, losses = m.pathway_forward(x, teacher, None)
    loss = F.cross_entropy(out, y) + (m.alpha_weights(a) * losses).sum()
    keys = list(student)
    grads = torch.autograd.grad(loss, [theta.student[k] for k in keys], create_graph=True)
    new = {
        k: _reference_step(student[k], g, opt.state[student[k]], group, decoupled)
        for k, g in zip(keys, grads)
    }
    val = F.cross_entropy(m.student_forward(xv, new), yv)
    expected = torch.autograd.grad(val, a)[0]

    virtual = virtual_step_settings(opt, theta.student)
    result = compute_hypergradient(
        m, SearchBatches(x, y, teacher, xv, yv), virtual, HypergradientOptions(method=method)
    )
    got = result.hypergradient.double()
    assert expected.abs().max() > 0
    if method == "exact":  # float64 throughout: the exact mixed derivative
        rel = float((got - expected).norm() / expected.norm())
        assert rel <= 1e-6, rel
    else:  # an approximation (O(eps^2), float32 pathway losses), as with SGD
        assert float(F.cosine_similarity(got, expected, dim=0)) > 0.99
