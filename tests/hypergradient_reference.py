"""The independent reference of the hypergradient tests: autograd through the unrolled
virtual step, and the random batches they use."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _batches(seed=0, n=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    xv = torch.randn(n, 1, 8, 8, generator=g, dtype=dtype)
    yv = torch.randint(0, 10, (n,), generator=g)
    return (x, y), (xv, yv)


def _unrolled_hypergradient(m, train, val, lr):
    """Autograd through the unrolled virtual step (create_graph): the independent reference."""
    (x, y), (xv, yv) = train, val
    theta = m.search_parameters()
    params = theta.map(lambda p: p.detach().clone().requires_grad_(True))
    a = m.alpha_logits.detach().clone().requires_grad_(True)
    teacher = m.teacher_outputs(x)
    out, losses = m.pathway_forward(x, teacher, m.active_pathways(), params)
    loss = F.cross_entropy(out, y) + (m.alpha_weights(a) * losses).sum()
    keys = list(params.student)
    grads = torch.autograd.grad(
        loss, [params.student[k] for k in keys], create_graph=True, allow_unused=True
    )
    new = {k: params.student[k] - lr * g for k, g in zip(keys, grads) if g is not None}
    val_loss = F.cross_entropy(m.student_forward(xv, new), yv)
    return torch.autograd.grad(val_loss, a)[0]
