"""A summary of one row of pathway weights (active pathways, entropy, effective number,
the heaviest pathways): what the search and the replay log and the summaries print."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: How many of the heaviest pathways the summary names.
TOP_K = 3


@dataclass(frozen=True)
class WeightSummary:
    """A summary of one row of pathway weights.

    Attributes:
        active: pathways the module computes (not pruned; all without a prune threshold).
        entropy: entropy (nats) of the weights normalised to sum 1.
        effective: ``exp(entropy)``, the number of equally weighted pathways with that
            entropy (``P`` for uniform weights, 1 for a single pathway).
        top_share: the share of the `TOP_K` heaviest pathways in the total weight.
        top: ``(name, share)`` of those pathways, heaviest first.
    """

    active: int
    entropy: float
    effective: float
    top_share: float
    top: tuple[tuple[str, float], ...]


def weight_summary(
    weights: Tensor, names: list[str], active: list[bool] | None = None, k: int = TOP_K
) -> WeightSummary:
    """The `WeightSummary` of non-negative ``weights`` ``[P]`` with pathway ``names``
    (``active``: the module's mask of computed pathways, ``None``: all)."""
    w = weights.detach().double().clamp_min(0)
    total = float(w.sum())
    share = w / total if total > 0 else torch.full_like(w, 1.0 / len(w))
    nonzero = share[share > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    order = torch.argsort(share, descending=True)[: min(k, len(w))].tolist()
    return WeightSummary(
        active=len(w) if active is None else int(sum(bool(a) for a in active)),
        entropy=entropy,
        effective=math.exp(entropy),
        top_share=float(share[order].sum()),
        top=tuple((names[i], float(share[i])) for i in order),
    )
