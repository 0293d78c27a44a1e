"""The pure helpers of `distpro_lightning.grouping`, against values written out by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distpro_lightning.grouping import flat_to_groups, split_flat

KEYS = {"alpha_lr": ("alpha", "lr"), "warmup_steps": ("schedule", "warmup_steps")}


@dataclass
class Alpha:
    lr: float = 0.01


@dataclass
class Schedule:
    warmup_steps: int = 0


def test_split_flat_files_named_keys_by_group_and_keeps_the_rest_in_order():
    rest, changes = split_flat({"plot": False, "alpha_lr": 0.1, "save_path": "p.json"}, KEYS)
    assert list(rest.items()) == [("plot", False), ("save_path", "p.json")]
    assert changes == {"alpha": {"lr": 0.1}}
    assert split_flat({}, KEYS) == ({}, {})


def test_flat_to_groups_applies_the_changes_with_one_warning_naming_the_new_keys():
    groups = {"alpha": Alpha(), "schedule": Schedule()}
    with pytest.warns(FutureWarning, match=r"alpha\.lr, schedule\.warmup_steps") as seen:
        out = flat_to_groups("Owner", {"alpha_lr": 0.5, "warmup_steps": 3}, KEYS, groups)
    assert len(seen) == 1
    assert out == {"alpha": Alpha(lr=0.5), "schedule": Schedule(warmup_steps=3)}
    assert groups["alpha"] == Alpha()  # the given objects are not changed


def test_flat_to_groups_refuses_an_unknown_keyword_with_the_closest_name():
    with pytest.raises(TypeError, match=r"'alpha_rl' \(did you mean 'alpha_lr'\?\)"):
        flat_to_groups("Owner", {"alpha_rl": 0.5}, KEYS, {"alpha": Alpha()})


def test_say_unused_warns_only_for_given_values_that_have_no_effect(recwarn):
    from distpro_lightning.grouping import say_unused

    say_unused("search.alpha", Alpha(lr=0.5), {"lr": "optimizer='x' (unused)"})
    say_unused("search.alpha", Alpha(), {"lr": "optimizer='x' (unused)"})  # the default: quiet
    say_unused("search.alpha", Alpha(lr=0.5), {"lr": None})  # in effect: quiet
    said = [str(w.message) for w in recwarn]
    assert said == ["search.alpha.lr=0.5 has no effect with optimizer='x' (unused)."]


def test_a_field_given_in_its_group_and_as_a_different_flat_keyword_is_refused():
    from distpro_lightning import DistProModule, ProcessSearchCallback

    with pytest.raises(TypeError) as err:
        DistProModule("resnet8", "resnet14", in_channels=1, optimizer={"lr": 0.1}, lr=0.2)
    assert str(err.value) == (
        "DistProModule got a setting twice, in its group and as a flat keyword: "
        "optimizer.lr=0.1 and lr=0.2. Give each once, in its group."
    )
    with pytest.raises(TypeError, match=r"alpha.lr=0.1 and alpha_lr=0.2"):
        ProcessSearchCallback(alpha={"lr": 0.1}, alpha_lr=0.2)
    # a module's own default group (ClassifierModule: lr 0.1) is no given value...
    from distpro_lightning import ClassifierModule

    with pytest.warns(FutureWarning):
        assert ClassifierModule("resnet8", 10, 1, lr=0.3).optimizer_config.lr == 0.3
    with pytest.raises(TypeError, match=r"optimizer.lr=0.2 and lr=0.3"):  # ...a group is
        ClassifierModule("resnet8", 10, 1, optimizer={"lr": 0.2}, lr=0.3)
    # the same value twice, or a group left at its default, is not a clash
    with pytest.warns(FutureWarning):
        same = DistProModule("resnet8", "resnet14", in_channels=1, optimizer={"lr": 0.2}, lr=0.2)
    with pytest.warns(FutureWarning):
        flat = DistProModule("resnet8", "resnet14", in_channels=1, lr=0.3)
    assert (same.optimizer_config.lr, flat.optimizer_config.lr) == (0.2, 0.3)
