"""Fused execution of the convolutional pathway heads: one group per (student tap, teacher tap).

The heads of the pathways that share a student tap and a teacher tap (``conv_bn``,
``attn2``, ``attn3`` of one connection) see the same input, resized to the same size. A
group runs them together, reading the weights of the per-pathway modules at call time (so
parameter names, ``functional_call`` substitution, gradients and optimizer state are those
of the per-pathway heads):

* the first 1x1 convolutions of all members as one convolution with the output channels
  concatenated, and their BatchNorms as one BatchNorm (a per-channel BatchNorm splits
  exactly: each channel's batch statistics and affine map only see that channel);
* the self-attention score convolutions and the 3x3 convolutions of the ``attn2``/``attn3``
  members as grouped convolutions (``groups`` = number of members);
* the distance of every member in one batched reduction (`BATCHED_DISTANCES`).

Members are ordered by depth (``conv_bn``, ``attn2``, ``attn3``), so each later layer reads
a contiguous slice of the channels. Running statistics are read from the per-pathway
BatchNorms and written back to them. Only the active (unpruned) members enter the
concatenation: a pruned pathway is not computed and gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distpro_lightning.pathways.transforms import FeatureTransform, resize_map

KIND_DEPTH = {"conv_bn": 0, "attn2": 1, "attn3": 2}


@dataclass(frozen=True)
class HeadGroup:
    """The pathways of one ``(student tap, teacher tap)`` connection, shallowest kind first."""

    student_idx: int
    teacher_idx: int
    members: tuple[int, ...]


def plan_groups(specs: Sequence, heads: Sequence[nn.Module]) -> tuple[list[HeadGroup], list[int]]:
    """Group the convolutional heads by connection; return ``(groups, other_pathways)``.

    ``other_pathways`` (token heads) always run one by one.
    """
    by_pair: dict[tuple[int, int], list[int]] = {}
    others: list[int] = []
    for p, (spec, head) in enumerate(zip(specs, heads)):
        if isinstance(head, FeatureTransform):
            by_pair.setdefault((spec.student_idx, spec.teacher_idx), []).append(p)
        else:
            others.append(p)
    groups = [
        HeadGroup(s, t, tuple(sorted(members, key=lambda p: KIND_DEPTH[heads[p].kind])))
        for (s, t), members in by_pair.items()
    ]
    return groups, others


def _cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim)


def _bn_mode(bn: nn.BatchNorm2d) -> tuple:
    has_stats = bn.running_mean is not None
    return (bn.training, bn.track_running_stats, bn.momentum, bn.eps, bn.affine, has_stats)


def fusable(heads: Sequence[FeatureTransform]) -> bool:
    """Whether these heads' BatchNorms agree in mode (train/eval, tracking, momentum, eps).

    A cumulative average (``momentum=None``) depends on each layer's own batch count, so it
    does not fuse; neither does a mix of train- and eval-mode layers.
    """
    for layer in (1, 4, 7):
        bns = [h.body[layer] for h in heads if len(h.body) > layer]
        modes = {_bn_mode(bn) for bn in bns}
        if len(bns) > 1 and (len(modes) > 1 or bns[0].momentum is None or not modes.pop()[-1]):
            return False
    return True


def fused_batch_norm(x: Tensor, bns: Sequence[nn.BatchNorm2d]) -> Tensor:
    """``cat([bn(x_k) for bn, x_k in zip(bns, x.chunk(len(bns), 1))], 1)``, as one BatchNorm.

    The layers must agree in mode (`fusable`); their running statistics and batch
    counts are updated exactly as their own forward would.
    """
    first = bns[0]
    if len(bns) == 1:
        return first(x)
    update = first.training and first.track_running_stats
    if update:
        torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
    use_running = not first.training or first.track_running_stats
    mean = torch.cat([bn.running_mean for bn in bns]) if use_running else None
    var = torch.cat([bn.running_var for bn in bns]) if use_running else None
    weight = torch.cat([bn.weight for bn in bns]) if first.affine else None
    bias = torch.cat([bn.bias for bn in bns]) if first.affine else None
    out = F.batch_norm(
        x, mean, var, weight, bias, first.training or mean is None, first.momentum or 0.0, first.eps
    )
    if update:
        sizes = [bn.num_features for bn in bns]
        torch._foreach_copy_([bn.running_mean for bn in bns], list(mean.split(sizes)))
        torch._foreach_copy_([bn.running_var for bn in bns], list(var.split(sizes)))
    return out


def _conv(x: Tensor, convs: Sequence[nn.Conv2d], groups: int, bias: bool = False) -> Tensor:
    first = convs[0]
    b = _cat([c.bias for c in convs]) if bias else None
    return F.conv2d(x, _cat([c.weight for c in convs]), b, first.stride, first.padding, 1, groups)


def _attn_grouped(bodies: Sequence[nn.Sequential], z: Tensor, c: int) -> list[Tensor]:
    """The attention members' later layers as grouped convolutions; outputs per depth."""
    a = len(bodies)
    score = _conv(z, [b[2].score for b in bodies], a, bias=True).sigmoid()
    z = (z.unflatten(1, (a, c)) * score.unsqueeze(2)).flatten(1, 2)
    u = fused_batch_norm(_conv(z, [b[3] for b in bodies], a), [b[4] for b in bodies])
    deep = [b for b in bodies if len(b) > 5]
    n_shallow, d = a - len(deep), len(deep)
    if not deep:
        return [u]
    shallow, r = u.split([n_shallow * c, d * c], 1) if n_shallow else (None, u)
    r = fused_batch_norm(_conv(F.relu(r), [b[6] for b in deep], d), [b[7] for b in deep])
    return [r] if shallow is None else [shallow, r]


def _attn_each(bodies: Sequence[nn.Sequential], z: Tensor, c: int) -> list[Tensor]:
    """The attention members' later layers one member at a time (on its channel slice)."""
    return [body[2:](zi) for zi, body in zip(z.split(c, 1), bodies)]


def interpolation_matrix(n_in: int, n_out: int, ref: Tensor) -> Tensor:
    """``[n_out, n_in]``: the weights of 1-D linear interpolation (``align_corners=False``)."""
    eye = torch.eye(n_in, dtype=ref.dtype, device=ref.device).unsqueeze(0)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


def bilinear_by_matmul(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``F.interpolate(x, mode="bilinear")`` as ``rows @ x @ cols.T`` (bilinear is separable)."""
    return rows @ x @ cols.T


def group_forward(
    heads: Sequence[FeatureTransform],
    x: Tensor,
    size: tuple[int, int],
    grouped: bool = True,
    upsample: Callable[[Tensor, tuple[int, int]], Tensor] = resize_map,
) -> Tensor:
    """The outputs of ``heads`` (shallowest kind first) on ``x``, concatenated on channels.

    Equal to ``cat([h(x, size) for h in heads], 1)``: ``[B, len(heads) * C_t, H_t, W_t]``.
    ``grouped``: the attention members' 3x3 convolutions as grouped convolutions (else one
    convolution per member).
    """
    pool_first = x.shape[-2] >= size[0] and x.shape[-1] >= size[1]
    if pool_first:
        x = resize_map(x, size)
    bodies = [h.body for h in heads]
    c = bodies[0][1].num_features
    y = fused_batch_norm(_conv(x, [b[0] for b in bodies], 1), [b[1] for b in bodies])
    attn = [b for b in bodies if len(b) > 2]
    n_plain = len(bodies) - len(attn)
    if not attn:
        outs = [y]
    else:
        plain, z = y.split([n_plain * c, len(attn) * c], 1) if n_plain else (None, y)
        outs = [] if plain is None else [plain]
        outs += (_attn_grouped if grouped else _attn_each)(attn, z, c)
    out = _cat(outs, 1)
    return out if pool_first else upsample(out, size)
