"""Which pathways a module gets from its connections, transforms and logit pathways."""

from __future__ import annotations

import pytest
import torch
from conftest import make_module


def test_logits_only_distillation_needs_no_transform_kind():
    """Hinton KD as a module: no feature connections, so no transform kind either."""
    module = make_module(transforms=[], connections="none", response_kd=True)
    assert module.pathway_names == ["logits->logits:kd"]
    assert module.num_pathways == 1


def test_feature_connections_without_a_transform_kind_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"transforms=\[\.\.\.\], e\.g\. \[conv_bn\]"):
        make_module(transforms=[], connections="all")


def test_input_shape_that_disagrees_with_example_input_array_is_said_unused(caplog):
    import logging

    from distpro_lightning.models import create
    from distpro_lightning.pathways.taps import example_input

    net = create("resnet8", num_classes=10, in_channels=1)
    example = torch.zeros(4, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="distpro_lightning"):
        used = example_input(net, [1, 64, 64], example)
        agreeing = example_input(net, [1, 8, 8], example)
    assert used.shape == (2, 1, 8, 8) and agreeing.shape == (2, 1, 8, 8)
    said = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert said == [
        "DistPro: input_shape=[1, 64, 64] has no effect: example_input_array (per-sample shape "
        "[1, 8, 8]) sizes the pathway heads. Drop input_shape, or make example_input_array the "
        "shape you train on."
    ]
