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
