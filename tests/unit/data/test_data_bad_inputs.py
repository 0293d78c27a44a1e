"""Bad arguments of the data modules: the error each must give (the parameter, the value
given and the fix), and that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from bad_inputs import Case, check_case  # noqa: E402

from distpro_lightning.data import DigitsDataModule, ImageFolderDataModule  # noqa: E402

NO_QUOTES = "in YAML: a number without quotes"


def digits(**kw) -> object:
    return lambda tmp: DigitsDataModule(**kw)


CASES = [
    Case(
        "val_fraction as a string",
        digits(val_fraction="0.1"),
        TypeError,
        ("DigitsDataModule(val_fraction='0.1')", "None or a number in (0, 1)", NO_QUOTES),
    ),
    Case(
        "search_val_fraction as a string",
        digits(mode="search", search_val_fraction="0.1"),
        TypeError,
        ("DigitsDataModule(search_val_fraction='0.1')", "a number in (0, 1)", NO_QUOTES),
    ),
    Case(
        "search_val_fraction as a bool",
        digits(mode="search", search_val_fraction=True),
        TypeError,
        ("search_val_fraction=True", "a number in (0, 1)", "got a bool"),
    ),
    Case(
        "batch_size as a string",
        digits(batch_size="4"),
        TypeError,
        ("DigitsDataModule(batch_size='4')", "a positive int", NO_QUOTES),
    ),
    Case(
        "batch_size as a float",
        digits(batch_size=2.5),
        TypeError,
        ("DigitsDataModule(batch_size=2.5)", "a positive int", "got a float"),
        (NO_QUOTES,),
    ),
    Case(
        "batch_size as a bool",
        digits(batch_size=True),
        TypeError,
        ("batch_size=True", "a positive int", "got a bool"),
    ),
    Case(
        "batch_size zero (a range error, as before)",
        digits(batch_size=0),
        ValueError,
        ("batch_size must be >= 1",),
    ),
    Case(
        "search_val_batch_size as a float",
        digits(mode="search", search_val_batch_size=8.0),
        TypeError,
        ("search_val_batch_size=8.0", "None or a positive int"),
    ),
    Case("subset as a string", digits(subset="100"), TypeError, ("subset='100'", NO_QUOTES)),
    Case("num_workers as a float", digits(num_workers=1.5), TypeError, ("num_workers=1.5",)),
    Case(
        "image_size as a string",
        lambda tmp: ImageFolderDataModule(str(tmp), image_size="64"),
        TypeError,
        ("ImageFolderDataModule(image_size='64')", "a positive int", NO_QUOTES),
    ),
    Case("an int fraction is a number (out of range)", digits(val_fraction=1), ValueError),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_good_numbers_are_kept() -> None:
    dm = DigitsDataModule(mode="search", batch_size=4, search_val_fraction=0.1, val_fraction=0.1)
    assert (dm.batch_size, dm.search_val_fraction, dm.val_fraction) == (4, 0.1, 0.1)
