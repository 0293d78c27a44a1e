"""`logits_for`, the inverse of `normalize`: a round trip for every normalisation, values
computed by hand, and the weights no normalisation can produce refused."""

from __future__ import annotations

import math

import pytest
import torch

from distpro_lightning.functional.normalization import NORMALIZATIONS, logits_for, normalize


@pytest.mark.parametrize("name", NORMALIZATIONS)
def test_normalizing_the_inverse_gives_the_weights_back(name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64) * 2
    weights = normalize(logits, name, bias=0.7)
    back = normalize(logits_for(weights, name, bias=0.7), name, bias=0.7)
    torch.testing.assert_close(back, weights, rtol=1e-10, atol=1e-12)


def test_biased_softmax_inverse_by_hand() -> None:
    # weights 0.2 and 0.3 leave 0.5 to the bias g = 1: logits g + log(w / 0.5)
    got = logits_for(torch.tensor([0.2, 0.3], dtype=torch.float64), "biased_softmax", 1.0)
    want = torch.tensor([1 + math.log(0.4), 1 + math.log(0.6)], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_l1_plus_one_inverse_by_hand() -> None:
    # logits (1, -3): weights (1, -3) / 5; back: w / (1 - 4/5) = (1, -3)
    got = logits_for(torch.tensor([0.2, -0.6], dtype=torch.float64), "l1_plus_one")
    torch.testing.assert_close(got, torch.tensor([1.0, -3.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("biased_softmax", [0.6, 0.5], "sum to < 1"),
        ("biased_softmax", [0.0, 0.5], "must be > 0"),
        ("softmax", [-0.1, 1.1], "must be > 0"),
        ("sigmoid", [0.5, 1.0], "must be < 1"),
        ("l1_plus_one", [0.5, -0.5], "sum to < 1"),
    ],
)
def test_weights_no_normalization_produces_are_refused(name, weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        logits_for(torch.tensor(weights), name)


def test_an_unknown_normalization_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="biased_softmax"):
        logits_for(torch.tensor([0.5]), "softplus")
