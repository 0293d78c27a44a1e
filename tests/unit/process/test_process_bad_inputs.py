"""Bad or unusual process files (validation, versions, directories, killed writers): the
error each must give, or the right result, and that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from bad_inputs import (  # noqa: E402
    NAMES,
    ROOT,
    RUN,
    Case,
    check_case,
    edited,
    good_process,
    load_edited,
)

from distpro_lightning import DistillationProcess  # noqa: E402


def skipped_round_trip(tmp: Path) -> None:
    p = good_process()
    p.append(torch.tensor([1.0, -1.0]), skipped=True)
    p.append(torch.tensor([2.0, 0.0]))
    p.save(tmp / "skip.json")
    q = DistillationProcess.load(tmp / "skip.json")
    assert q.skipped_steps == [3] and q.run_id == "run-a"
    assert json.loads((tmp / "skip.json").read_text())["skipped_steps"] == [3]
    assert q.fingerprint() == p.fingerprint() == good_process().with_rows(p.logits).fingerprint()
    assert q.remap(NAMES[::-1]).skipped_steps == [3]  # same rows, other column order
    assert q.interpolate(9).skipped_steps == [] and q.interpolate(9).run_id is None
    q.truncate(3)
    assert q.skipped_steps == []


def version_1_loads(tmp: Path) -> None:
    v1 = edited(tmp, version=1, run_id=None, skipped_steps=None)
    q = DistillationProcess.load(v1)
    assert q.run_id is None and q.skipped_steps == [] and len(q) == 3


def dead_writers_temps_are_removed(tmp: Path) -> None:
    target = tmp / RUN
    # A writer killed (SIGKILL) between writing its temporary file and the rename.
    code = (
        "import os, sys, time\n"
        "os.replace = lambda *a: time.sleep(600)\n"
        "from distpro_lightning import DistillationProcess\n"
        f"DistillationProcess.load({str(target)!r}).save({str(target)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while not list(tmp.glob(f".{RUN}.{child.pid}-*.tmp")):
        assert time.time() < deadline and child.poll() is None, "the writer never wrote"
        time.sleep(0.05)
    child.kill()
    child.wait()
    left = list(tmp.glob(f".{RUN}.{child.pid}-*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 100  # full size, hidden
    mine = tmp / f".{RUN}.{os.getpid()}-abcdefgh.tmp"  # our own pid: from an earlier life
    alive = tmp / f".{RUN}.{os.getppid()}-abcdefgh.tmp"  # a live writer: kept
    other = tmp / f".other.json.{child.pid}-abcdefgh.tmp"  # another target: kept
    legacy_old, legacy_new = tmp / f".{RUN}.abcdefgh.tmp", tmp / f".{RUN}.ijklmnop.tmp"
    for f in (mine, alive, other, legacy_old, legacy_new):
        f.write_text("x")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    good_process().save(target)
    remaining = {p.name for p in tmp.iterdir()}
    assert remaining == {RUN, alive.name, other.name, legacy_new.name}, remaining


CASES = [
    Case("version true", load_edited(version=True), ValueError, ("'version'", "boolean true")),
    Case("prune_threshold true", load_edited(prune_threshold=True), ValueError, ("boolean",)),
    Case("steps_per_epoch true", load_edited(steps_per_epoch=True), ValueError, ("boolean",)),
    Case("steps_per_epoch 2.5", load_edited(steps_per_epoch=2.5), ValueError, ("integer",)),
    Case("bias false", load_edited(bias=False), ValueError, ("'bias'", "boolean false")),
    Case("scale negative", load_edited(scale=-2.0), ValueError, ("'scale' must be > 0", "-2")),
    Case("scale zero", load_edited(scale=0), ValueError, ("'scale' must be > 0",)),
    Case("skipped out of range", load_edited(skipped_steps=[3]), ValueError, ("[3]", "3 rows")),
    Case("skipped unordered", load_edited(skipped_steps=[2, 1]), ValueError, ("increasing",)),
    Case("skipped true", load_edited(skipped_steps=[True]), ValueError, ("boolean true",)),
    Case("skipped in v1", load_edited(version=1), ValueError, ("new in version 2",)),
    Case("run_id empty", load_edited(run_id=""), ValueError, ("'run_id'",)),
    Case("skipped round trip", skipped_round_trip),
    Case("version 1 file loads", version_1_loads),
    Case(
        "load a directory",
        lambda tmp: DistillationProcess.load(tmp),
        IsADirectoryError,
        ("is a directory", RUN),
    ),
    Case("killed writes cleaned", dead_writers_temps_are_removed),
    # issue 37, case 9: a string "false" is truthy (it counted as a proxy); case 17: raw errors
    Case(
        "proxy a string",
        load_edited(provenance={"run_settings": {"proxy": "false"}}),
        ValueError,
        ("provenance.run_settings.proxy must be true or false, got 'false'",),
    ),
    Case(
        "planned steps a string",
        load_edited(provenance={"search_size": {"planned_steps": "30"}}),
        ValueError,
        ("provenance.search_size.planned_steps must be an integer, got '30'",),
    ),
    Case(  # searched_steps() divided by it (a ZeroDivisionError)
        "search every 0 steps",
        load_edited(provenance={"run_settings": {"search_every_n_steps": 0}}),
        ValueError,
        ("provenance.run_settings.search_every_n_steps must be >= 1, got 0",),
    ),
    Case(
        "negative warm-up",
        load_edited(provenance={"run_settings": {"warmup_steps": -2}}),
        ValueError,
        ("provenance.run_settings.warmup_steps must be >= 0, got -2",),
    ),
    Case(
        "run_settings not an object",
        load_edited(provenance={"run_settings": [1, 2]}),
        ValueError,
        ("provenance.run_settings must be an object, got [1, 2]",),
    ),
    Case(
        "kd_temperature a string",
        load_edited(provenance={"kd_temperature": "4"}),
        ValueError,
        ("provenance.kd_temperature must be a finite number, got '4'",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
