"""Feature distances for the pathways and response-based (Hinton) KD.

All functions are pure and return a scalar tensor (mean over the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

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
    height, width = diff.shape[-2:]
    weight, total = 1.0, 1.0
    source = diff
    for size in levels:
        if size >= height:
            continue
        weight /= 2.0
        h, w = source.shape[-2:]
        # windows nest only if the source level tiles the map evenly and divides by `size`
        if height % h or width % w or h % size or w % size:
            source = diff
        source = F.adaptive_avg_pool2d(source, size)
        loss = loss + weight * source.pow(2).mean()
        total += weight
    return loss / total


def mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error."""
    return F.mse_loss(student, teacher)


def l1_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute error."""
    return F.l1_loss(student, teacher)


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "hcl": hcl_loss,
    "mse": mse_loss,
    "l1": l1_loss,
}


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
