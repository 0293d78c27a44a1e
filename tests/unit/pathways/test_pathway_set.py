"""Which pathways a module gets from its connections, transforms and logit pathways."""

from __future__ import annotations

import pytest
from conftest import make_module


def test_logits_only_distillation_needs_no_transform_kind():
    """Hinton KD as a module: no feature connections, so no transform kind either."""
    module = make_module(transforms=[], connections="none", response_kd=True)
    assert module.pathway_names == ["logits->logits:kd"]
    assert module.num_pathways == 1


def test_feature_connections_without_a_transform_kind_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"transforms=\[\.\.\.\], e\.g\. \[conv_bn\]"):
        make_module(transforms=[], connections="all")
