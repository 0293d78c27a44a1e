"""The runner's scheduling with ``jobs > 1`` (tasks faked: the real ones run in worker
processes, tests/integration/test_compare.py runs them in-process): every planned task
once, the results file saved after each, a failure raised only after the running tasks
are recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distpro_lightning.compare.pair import Pair
from distpro_lightning.compare.plan import resolve
from distpro_lightning.compare.runner import Runner
from distpro_lightning.compare.settings import CompareSettings


class FakeRunner(Runner):
    """`Runner` whose tasks return made-up records (validation by grid point)."""

    fail: str | None = None

    def run_one(self, task):
        point = resolve(self.settings, self.records, task) if task.kind == "run" else {}
        time.sleep(0.05 if task.key != self.fail else 0.01)
        if task.key == self.fail:
            raise RuntimeError(f"{task.key} broke")
        self.threads.add(threading.get_ident())
        val = 0.5 + 0.1 * point.get("w", 0.0)
        return {"kind": task.kind, "key": task.key, "method": task.method, "seed": task.seed,
                "params": point, "val_top1": val, "top1": val, "wall_s": 0.05,
                "pairing": {"init": str(task.seed), "order": str(task.seed)}}  # fmt: skip


def make(tmp_path, **kw):
    pair = Pair(model=lambda: None, data=lambda seed, search: None, source=("m:f", []))
    settings = CompareSettings(
        results=str(tmp_path / "r.json"), methods=["student", "hinton_kd"], seeds=[0, 1, 2],
        grid_seeds=[0, 1], grids={"hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}]},
        widen_rounds=0, jobs=2, **kw,
    )  # fmt: skip
    runner = FakeRunner(pair, settings, say=lambda text: None)
    runner.threads = set()
    runner.payload["history"].append({"command": "test", "started": "-"})
    return runner


def test_jobs_run_every_task_once_in_parallel_and_the_chosen_point_after_its_grid(tmp_path):
    runner = make(tmp_path)
    runner.run_tasks()
    keys = [r["key"] for r in runner.records]
    assert len(keys) == len(set(keys)) == 3 + 2 * 2 + 1
    # the chosen run starts once its grid is done (a student run may still finish after it)
    chosen = keys.index("run:hinton_kd:2:chosen")
    grid = [i for i, k in enumerate(keys) if k.startswith("run:hinton_kd:") and "chosen" not in k]
    assert len(grid) == 4 and max(grid) < chosen
    assert runner.records[chosen]["params"]["w"] == 2.0
    assert len(runner.threads) == 2
    saved = json.loads((tmp_path / "r.json").read_text())["records"]
    assert [r["key"] for r in saved] == keys


def test_a_failed_task_is_raised_after_the_running_ones_are_recorded(tmp_path):
    runner = make(tmp_path)
    runner.fail = "run:student:0:default"
    with pytest.raises(RuntimeError, match="broke"):
        runner.run_tasks()
    saved = [r["key"] for r in json.loads((tmp_path / "r.json").read_text())["records"]]
    assert "run:hinton_kd:0:w=1,T=4" in saved and runner.fail not in saved
    assert len(saved) == 1  # no new task started after the failure


def test_jobs_need_a_pair_that_a_fresh_process_can_rebuild(tmp_path):
    pair = Pair(model=lambda: None, data=lambda seed, search: None)
    settings = CompareSettings(results=str(tmp_path / "r.json"), methods=["student"], seeds=[0, 1],
                               grid_seeds=[0], jobs=2)  # fmt: skip
    with pytest.raises(ValueError, match="rebuilds the pair from Pair.source"):
        Runner(pair, settings)


def test_a_resumed_comparison_removes_the_workspaces_a_killed_one_left(tmp_path):
    runner = make(tmp_path)
    stale = runner.folder / "compare-k1ll3d"
    stale.mkdir(parents=True)
    (stale / "spec.json").write_text("{}")
    runner.prepare = lambda: None  # no warm-up to measure: the tasks are faked
    runner.run("test")
    assert not stale.exists() and len(runner.records) == 3 + 2 * 2 + 1


CHILD = """
import sys, time
from pathlib import Path
from distpro_lightning.compare.worker import exit_with_parent
exit_with_parent(0.05)
Path(sys.argv[1]).write_text("ready")
time.sleep(120)
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody reaped it yet)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_a_worker_stops_when_its_comparison_is_killed(tmp_path):
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(ready)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists() and _running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "the worker outlived its comparison"
    finally:
        parent.kill()


LATE_CHILD = """
import sys, time
from pathlib import Path
time.sleep(1.0)  # still importing when its parent dies
from distpro_lightning.compare.worker import exit_with_parent
exit_with_parent(0.05)
Path(sys.argv[1]).write_text("watching")
time.sleep(120)
"""
DYING_PARENT = """
import os, subprocess, sys
from distpro_lightning.compare.worker import parent_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=parent_env())
print(child.pid, flush=True)
os._exit(0)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_a_worker_whose_comparison_died_while_it_was_starting_stops_too(tmp_path):
    mark = tmp_path / "watching"
    parent = subprocess.Popen([sys.executable, "-c", DYING_PARENT, LATE_CHILD, str(mark)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(parent.stdout.readline())
    parent.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the worker outlived its comparison"


def test_lightnings_info_lines_are_off_in_a_comparison_and_restored_after():
    import logging

    from distpro_lightning.compare.runs import lightning_info_off

    lightning = logging.getLogger("lightning.pytorch")
    before = lightning.level
    with lightning_info_off():
        assert not lightning.isEnabledFor(logging.INFO)
        assert lightning.isEnabledFor(logging.WARNING)
    assert lightning.level == before
