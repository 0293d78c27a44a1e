"""`mean_logits`: logits whose normalisation is the mean of several rows' weights, at the
sources' level — checked against the mean of `normalize` (an independent forward pass),
by hand, at logits where float32 weights underflow, and for one source (itself)."""

from __future__ import annotations

import math

import pytest
import torch

from distpro_lightning.functional.normalization import NORMALIZATIONS, mean_logits, normalize


def _sources(name: str) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, dtype=torch.float64) * 2  # 3 sources x 6 rows x 5 pathways
    return x.abs() + 0.1 if name == "l1" else x  # l1: rows of one sign average


@pytest.mark.parametrize("name", NORMALIZATIONS)
def test_the_result_normalizes_to_the_mean_of_the_weights(name: str) -> None:
    x = _sources(name)
    want = normalize(x, name, bias=0.7).mean(dim=0)
    got = normalize(mean_logits(x, name, bias=0.7), name, bias=0.7)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NORMALIZATIONS)
def test_one_source_comes_back_as_itself_so_pruning_keeps_its_meaning(name: str) -> None:
    x = _sources(name)[:1]
    torch.testing.assert_close(mean_logits(x, name, bias=0.7), x[0], rtol=1e-10, atol=1e-10)


def test_biased_softmax_by_hand() -> None:
    # bias 0: logits (0, 0) weigh (1/3, 1/3), bias 1/3; logits (ln 2, 0) weigh (1/2, 1/4),
    # bias 1/4; the mean (5/12, 7/24) leaves 7/24 to the bias: logits ln(10/7), 0
    x = torch.tensor([[0.0, 0.0], [math.log(2), 0.0]], dtype=torch.float64)
    got = mean_logits(x, "biased_softmax", bias=0.0)
    torch.testing.assert_close(got, torch.tensor([math.log(10 / 7), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("level", [17.0, 30.0, 60.0, -120.0])
def test_float32_logits_whose_weights_underflow_still_average_exactly(level: float) -> None:
    # at 17 the bias's float32 share rounds to 0; at -120 the weights do
    x = torch.tensor([[[level, level - 1.0]], [[level, level - 1.0]]])
    got = mean_logits(x, "biased_softmax", bias=1.0)
    torch.testing.assert_close(got, x[0])
    got = mean_logits(x, "sigmoid")
    torch.testing.assert_close(got, x[0])


def test_l1_rows_of_opposite_signs_are_refused_with_the_reason() -> None:
    x = torch.tensor([[[1.0, -1.0]], [[1.0, 1.0]]])
    with pytest.raises(ValueError, match="opposite signs"):
        mean_logits(x, "l1")


def test_an_unknown_normalization_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="biased_softmax"):
        mean_logits(torch.zeros(1, 2), "softplus")
