"""Bad or unusual output paths of the search (directories, read-only folders, other runs'
files, Ctrl-C, kill -9): the error each must give, or the right result, and that nothing
was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import search_cases as sc  # noqa: E402
from bad_inputs import (  # noqa: E402
    RUN,
    Case,
    check_case,
    good_process,
)

from distpro_lightning.search.paths import check_overwrite, check_save_path  # noqa: E402


def read_only_folder(tmp: Path) -> object:
    if os.geteuid() != 0:
        folder = tmp / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return check_save_path(folder / "p.json")
    if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
        pytest.skip("no read-only folder for root here")
    return check_save_path("/sys/distpro-test/p.json")


def tilde_expanded(tmp: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        assert check_save_path("~/out/p.json") == tmp / "out" / "p.json"
    assert (tmp / "out").is_dir() and list((tmp / "out").iterdir()) == []  # probe removed


CASES = [
    Case("save to a directory", lambda t: check_save_path(t), ValueError, ("is a directory",)),
    Case("save to 'dir/'", lambda t: check_save_path(f"{t}/new/"), ValueError, ("directory",)),
    Case("save to ''", lambda t: check_save_path(""), ValueError, ("empty", "save_path=None")),
    Case("save to read-only", read_only_folder, ValueError, ("cannot be written",)),
    Case(
        "save under a file",
        lambda t: check_save_path(t / RUN / "p.json"),
        ValueError,
        ("is a file",),
    ),
    Case(
        "save to the plot's name",
        lambda t: check_save_path(t / "p.png"),
        ValueError,
        ("lines plot", "p.json"),
    ),
    Case("save to '~/...'", tilde_expanded),
    Case(
        "replace another run's file",
        lambda t: check_overwrite(t / RUN, "run-b"),
        FileExistsError,
        ("another search", "run-a", "overwrite=True", "resume"),
    ),
    Case(
        "replace a file without run id",
        lambda t: (good_process(None).save(t / "v.json"), check_overwrite(t / "v.json", "run-b")),
        FileExistsError,
        ("without a run id",),
    ),
    Case(
        "replace a non-process file",
        lambda t: ((t / "notes.json").write_text("{}"), check_overwrite(t / "notes.json", "x")),
        FileExistsError,
        ("not a readable process file", "notes.json"),
    ),
    Case("replace own run's file", lambda t: check_overwrite(t / RUN, "run-a")),
    Case("overwrite=True", lambda t: check_overwrite(t / RUN, "run-b", overwrite=True)),
    Case(
        "search: save_path a directory, at fit start",
        sc.save_path_checked_at_fit_start("TMP"),
        ValueError,
        ("is a directory",),
    ),
    Case(
        "search: save_path '', at fit start",
        sc.save_path_checked_at_fit_start(""),
        ValueError,
        ("empty",),
    ),
    Case(
        "search: save_path the plot's name, at fit start",
        sc.save_path_checked_at_fit_start("TMP/p.png", plot=True),
        ValueError,
        ("lines plot",),
    ),
    Case(
        "search: another run's file, at fit start",
        sc.save_path_checked_at_fit_start(f"TMP/{RUN}"),
        FileExistsError,
        ("another search", "run-a", "overwrite=True"),
    ),
    Case("search: default path in the run's log folder", sc.default_path_in_log_folder),
    Case("search: plots named by plot_paths", sc.plots_beside_process),
    Case("search: Ctrl-C saves", sc.ctrl_c_saves),
    Case("search: an exception saves", sc.error_saves),
    Case("search: kill -9 loses at most an epoch", sc.kill_loses_at_most_an_epoch),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
