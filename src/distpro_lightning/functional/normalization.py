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


def logits_for(weights: Tensor, name: str, bias: float = 1.0) -> Tensor:
    """Raw logits whose normalisation is ``weights`` (the inverse of `normalize`, e.g. to
    store an average of weights as a process): ``normalize(logits_for(w, n), n) == w`` for
    every ``w`` that normalisation can produce.

    * ``biased_softmax``: ``g + log(w) - log(1 - sum(w))`` (the appended bias takes the rest)
    * ``softmax``: ``log(w)`` (the logits are defined up to a constant; this one)
    * ``l1_plus_one``: ``w / (1 - ||w||_1)``
    * ``l1``: ``w`` (the normalisation is scale-free)
    * ``sigmoid``: ``log(w / (1 - w))``
    * ``uniform``: zeros (the weights do not depend on the logits)

    Raises ``ValueError`` when ``weights`` lie outside what the normalisation produces
    (a weight at or below 0, or a sum at or above 1 for ``biased_softmax``).
    """
    check_normalization(name)
    w = weights.to(torch.float64)
    total = w.abs().sum(dim=-1, keepdim=True)
    if name in ("biased_softmax", "softmax", "sigmoid") and bool((w <= 0).any()):
        raise ValueError(f"{name} weights must be > 0 to invert; got a minimum of {w.min():.3g}.")
    if name in ("biased_softmax", "l1_plus_one") and bool((total >= 1).any()):
        raise ValueError(
            f"{name} weights must sum to < 1 (the rest is the bias's share); got a sum of "
            f"{total.max():.6g}."
        )
    if name == "sigmoid" and bool((w >= 1).any()):
        raise ValueError(f"sigmoid weights must be < 1 to invert; got {w.max():.6g}.")
    if name == "biased_softmax":
        out = float(bias) + w.log() - (1.0 - w.sum(dim=-1, keepdim=True)).log()
    elif name == "softmax":
        out = w.log()
    elif name == "l1_plus_one":
        out = w / (1.0 - total)
    elif name == "l1":
        out = w
    elif name == "sigmoid":
        out = (w / (1.0 - w)).log()
    else:
        out = torch.zeros_like(w)
    return out.to(weights.dtype)
