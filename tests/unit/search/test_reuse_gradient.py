"""``reuse_training_gradient``: what the real update gets, against independent computations."""

from __future__ import annotations

import copy

import torch
from conftest import make_module

from distpro_lightning import SearchSettings, SearchStep


def _batches(n=16):
    g = torch.Generator().manual_seed(1)
    x, xv = torch.randn(2, n, 1, 8, 8, generator=g)
    y, yv = torch.randint(0, 10, (2, n), generator=g)
    return (x, y), (xv, yv)


def _one_step(m, reuse):
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    step = SearchStep(m, opt, SearchSettings(reuse_training_gradient=reuse))
    train, val = _batches()
    before = m.alpha_logits.detach().clone()
    step(train, val, step=0)
    if reuse:
        reused = m.take_reused_gradient()
        loss = reused.surrogate_loss()
    else:
        reused, loss = None, m.training_loss(train)[0]
    loss.backward()
    return m, reused, before, train


def _gradient_at(m, logits, train):
    """The student's training gradient with the given logits (an independent backward)."""
    m = copy.deepcopy(m)
    m.zero_grad()
    with torch.no_grad():
        m.alpha_logits.copy_(logits)
    m.training_loss(train)[0].backward()
    return torch.cat([p.grad.reshape(-1) for p in m.student.parameters()])


def test_reused_gradient_is_the_one_at_the_previous_logits():
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn", "attn2"]).train()
    start = copy.deepcopy(m)
    m, reused, before, train = _one_step(m, reuse=True)
    got = torch.cat([g.reshape(-1) for g in reused.gradients.student.values()])
    at_t = _gradient_at(start, before, train)
    at_t1 = _gradient_at(start, m.alpha_logits.detach(), train)
    assert torch.allclose(got, at_t, rtol=1e-4, atol=1e-6)
    # the one-step lag: the exact update would use the gradient at a_{t+1}
    assert not torch.equal(m.alpha_logits.detach(), before)
    assert (at_t1 - at_t).norm() > 0


def test_reuse_updates_batchnorm_statistics_like_the_real_forward():
    torch.manual_seed(0)
    a = make_module(transforms=["conv_bn", "attn2"]).train()
    b = copy.deepcopy(a)
    _one_step(a, reuse=True)
    _one_step(b, reuse=False)
    stats = [k for k in a.state_dict() if "running_" in k or "num_batches" in k]
    assert stats
    sa, sb, s0 = a.state_dict(), b.state_dict(), make_module().state_dict()
    moved = 0
    for k in stats:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-5, atol=1e-6), k
        moved += int(k in s0 and not torch.equal(sa[k], s0[k]))
    assert moved > 0


def test_reused_gradient_carries_the_task_loss_of_its_training_pass():
    # DistProModule logs it as train/task_loss and watches it for a divergence on this path
    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"]).train()
    start = copy.deepcopy(m)
    m, reused, _, (x, y) = _one_step(m, reuse=True)
    with torch.no_grad():  # an independent forward of the student at theta
        expected = torch.nn.functional.cross_entropy(start.student(x), y)
    assert reused.task_loss is not None
    assert torch.allclose(reused.task_loss, expected, rtol=1e-5, atol=1e-6)
    assert float(reused.loss) > float(reused.task_loss)  # plus the distillation term
