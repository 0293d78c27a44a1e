"""The package's lazy namespace: ``distpro_lightning`` imports its names on first use,
lists them, and refuses an unknown one by name."""

from __future__ import annotations

import pytest

import distpro_lightning


def test_the_package_lists_its_public_names_before_they_are_imported():
    names = dir(distpro_lightning)
    assert {"DistProModule", "ProcessSearchCallback", "ProcessScheduleCallback"} <= set(names)
    with pytest.raises(AttributeError, match="has no attribute 'DistProModel'"):
        _ = distpro_lightning.DistProModel
