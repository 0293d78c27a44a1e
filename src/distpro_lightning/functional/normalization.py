"""Normalisations of the raw pathway logits ``a~`` into pathway weights (paper Table 7).

Every function maps logits ``[P]`` (or ``[T, P]``) to weights of the same shape and is
differentiable in the logits, so the hypergradient can be pulled back through it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

NormalizationName = Literal["biased_softmax", "softmax", "l1_plus_one", "l1", "sigmoid", "uniform"]
NORMALIZATIONS: tuple[str, ...] = (
    "biased_softmax",
    "softmax",
    "l1_plus_one",
    "l1",
    "sigmoid",
    "uniform",
)


def check_normalization(name: str) -> str:
    """Return ``name`` if it is a known normalisation, else raise a ``ValueError`` listing them."""
    if name not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {name!r}. Choose one of: {', '.join(NORMALIZATIONS)}."
        )
    return name


def normalize(logits: Tensor, name: str, bias: float = 1.0) -> Tensor:
    """Normalise raw logits along the last dimension.

    Args:
        logits: raw pathway logits ``a~``, shape ``[..., P]``.
        name: one of `NORMALIZATIONS`.
        bias: the scalar ``g`` appended before the softmax in ``biased_softmax``.

    Returns:
        The weights ``w(a~)`` (without any global scale), same shape as ``logits``.

    * ``biased_softmax``: ``softmax(concat(a~, g))[:P]`` (the paper's choice)
    * ``softmax``: ``softmax(a~)``
    * ``l1_plus_one``: ``a~ / (||a~||_1 + 1)``
    * ``l1``: ``a~ / ||a~||_1``
    * ``sigmoid``: ``sigmoid(a~)``
    * ``uniform``: ``1 / P`` (the "equally weighted" ablation; constant in ``a~``)
    """
    check_normalization(name)
    if name == "biased_softmax":
        g = logits.new_full((*logits.shape[:-1], 1), float(bias))
        return torch.softmax(torch.cat([logits, g], dim=-1), dim=-1)[..., :-1]
    if name == "softmax":
        return torch.softmax(logits, dim=-1)
    if name == "l1_plus_one":
        return logits / (logits.abs().sum(dim=-1, keepdim=True) + 1.0)
    if name == "l1":
        return logits / logits.abs().sum(dim=-1, keepdim=True).clamp_min(1e-12)
    if name == "sigmoid":
        return torch.sigmoid(logits)
    # uniform: keep a (zero) dependency on the logits so autograd still works.
    return torch.full_like(logits, 1.0 / logits.shape[-1]) + 0.0 * logits


def mean_logits(logits: Tensor, name: str, bias: float = 1.0) -> Tensor:
    """Logits whose normalisation is the mean of the normalised ``logits[k]`` over ``k``
    (``[K, ..., P]`` -> ``[..., P]``), at the sources' level: one source comes back as
    itself, so pruning (a threshold on the raw logits) keeps its meaning. Computed in
    float64 and, where the weights can underflow, in log space.

    * ``biased_softmax``: ``g + M[:P] - M[P]`` with ``M = logsumexp_k log_softmax([l_k, g])``
      (the appended bias's share is the rest)
    * ``softmax``: ``logsumexp_k log_softmax(l_k) - log K`` plus the mean of the sources'
      ``logsumexp(l_k)`` (softmax ignores a constant; this keeps their level)
    * ``sigmoid``: ``logsumexp_k logsigmoid(l_k) - logsumexp_k logsigmoid(-l_k)``
    * ``l1_plus_one``: ``w / (1 - ||w||_1)`` of the mean weights ``w``
    * ``l1``: the mean weights times the sources' mean ``||l_k||_1``; refused where the
      sources' signs differ (the mean of such rows has ``||w||_1 < 1``, which no logits give)
    * ``uniform``: the mean logits (the weights do not depend on them)
    """
    check_normalization(name)
    x = logits.to(torch.float64)
    k = torch.tensor(float(x.shape[0]), dtype=torch.float64).log()
    if name == "biased_softmax":
        g = x.new_full((*x.shape[:-1], 1), float(bias))
        m = torch.log_softmax(torch.cat([x, g], dim=-1), dim=-1).logsumexp(dim=0)
        out = float(bias) + m[..., :-1] - m[..., -1:]
    elif name == "softmax":
        m = torch.log_softmax(x, dim=-1).logsumexp(dim=0) - k
        out = m + x.logsumexp(dim=-1, keepdim=True).mean(dim=0)
    elif name == "sigmoid":
        nn = torch.nn.functional
        out = nn.logsigmoid(x).logsumexp(dim=0) - nn.logsigmoid(-x).logsumexp(dim=0)
    elif name == "l1_plus_one":
        w = normalize(x, name).mean(dim=0)
        out = w / (1.0 - w.abs().sum(dim=-1, keepdim=True))
    elif name == "l1":
        w = normalize(x, name).mean(dim=0)
        size = w.abs().sum(dim=-1, keepdim=True)
        if bool(((size - 1.0).abs() > 1e-9).any()):
            raise ValueError(
                "l1 weights of opposite signs in one pathway cannot be averaged: their mean "
                "is no l1-normalised row. Average processes whose logits agree in sign, or "
                "use another normalisation."
            )
        out = w * x.abs().sum(dim=-1, keepdim=True).mean(dim=0)
    else:
        out = x.mean(dim=0)
    return out.to(logits.dtype)
