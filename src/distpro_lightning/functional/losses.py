"""Feature distances for the pathways and response-based (Hinton) KD.

All functions are pure. The pairwise distances (``hcl_loss``, ``mse_loss``, ``l1_loss``)
return a scalar tensor (mean over the batch); their batched forms (``hcl_losses``, ...)
compare ``K`` student maps stacked on dim 1 with one teacher map and return the ``[K]``
vector of the same distances in one reduction (the fused pathway heads use them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DistanceName = Literal["hcl", "mse", "l1"]


def hcl_loss(student: Tensor, teacher: Tensor, levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    """ReviewKD's hierarchical context loss.

    MSE at full resolution plus MSE after adaptive average pooling to each size in
    ``levels`` (4x4, 2x2, 1x1), weighted 1, 1/2, 1/4, 1/8 and normalised by the sum of
    the weights used. Pool sizes ``>= H`` are skipped. Non-4-D features (tokens) fall back
    to plain MSE.

    Computed on the difference ``d = student - teacher`` (pooling is linear, so
    ``pool(s) - pool(t) = pool(d)``), and a level is pooled from the previous level when the
    sizes divide evenly (then the windows nest and the result is the same): one pooling pass
    per level instead of two, on ever smaller maps.
    """
    diff = student - teacher
    loss = diff.pow(2).mean()
    if diff.dim() != 4:
        return loss
    total = 1.0
    for weight, pooled in _hcl_levels(diff, levels):
        loss = loss + weight * pooled.pow(2).mean()
        total += weight
    return loss / total


def _hcl_levels(diff: Tensor, levels: tuple[int, ...]) -> Iterator[tuple[float, Tensor]]:
    """``(weight, pooled diff)`` of each HCL level smaller than the ``[B, C, H, W]`` map."""
    height, width = diff.shape[-2:]
    weight, source = 1.0, diff
    for size in levels:
        if size >= height:
            continue
        weight /= 2.0
        h, w = source.shape[-2:]
        # windows nest only if the source level tiles the map evenly and divides by `size`
        if height % h or width % w or h % size or w % size:
            source = diff
        source = F.adaptive_avg_pool2d(source, size)
        yield weight, source


def mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error."""
    return F.mse_loss(student, teacher)


def l1_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute error."""
    return F.l1_loss(student, teacher)


def _mean_square(x: Tensor) -> Tensor:
    """``x.pow(2).mean`` over every dim but 1: ``[B, K, ...] -> [K]``.

    As squared norms of each ``x[b, k]`` (contiguous, so float32 accumulates accurately),
    summed over the batch: the backward is one full-size pass, where ``pow(2)`` takes three.
    """
    per_item = torch.linalg.vector_norm(x.flatten(2), dim=2).square()
    return per_item.sum(0) / (x.shape[0] * math.prod(x.shape[2:]))


def hcl_losses(students: Tensor, teacher: Tensor, levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    """``[hcl_loss(students[:, k], teacher) for k]`` as one batched reduction.

    ``students`` is ``[B, K, C, H, W]`` (``[B, K, *S]`` for other shapes: plain MSE, as in
    `hcl_loss`), ``teacher`` is ``[B, C, H, W]``; returns ``[K]``. Each pooling level
    runs once on the ``K * C`` channels of the difference.
    """
    diff = students - teacher.unsqueeze(1)
    loss = _mean_square(diff)
    if diff.dim() != 5:
        return loss
    k, total = diff.shape[1], 1.0
    for weight, pooled in _hcl_levels(diff.flatten(1, 2), levels):
        loss = loss + weight * _mean_square(pooled.unflatten(1, (k, -1)))
        total += weight
    return loss / total


def mse_losses(students: Tensor, teacher: Tensor) -> Tensor:
    """``[mse_loss(students[:, k], teacher) for k]``: ``[B, K, *S]`` and ``[B, *S]`` -> ``[K]``."""
    return _mean_square(students - teacher.unsqueeze(1))


def l1_losses(students: Tensor, teacher: Tensor) -> Tensor:
    """``[l1_loss(students[:, k], teacher) for k]``: ``[B, K, *S]`` and ``[B, *S]`` -> ``[K]``."""
    diff = students - teacher.unsqueeze(1)
    return diff.abs().mean(dim=(0, *range(2, diff.dim())))


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "hcl": hcl_loss,
    "mse": mse_loss,
    "l1": l1_loss,
}

BATCHED_DISTANCES: dict[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]] = {
    hcl_loss: hcl_losses,
    mse_loss: mse_losses,
    l1_loss: l1_losses,
}
"""The batched form of each pairwise distance (keyed by the function itself)."""


def get_distance(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Look up a distance by name, with an error listing the valid names."""
    if name not in DISTANCES:
        raise ValueError(f"Unknown distance {name!r}. Choose one of: {', '.join(DISTANCES)}.")
    return DISTANCES[name]


def hinton_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0
) -> Tensor:
    """Hinton et al.'s response-based KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))``."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
