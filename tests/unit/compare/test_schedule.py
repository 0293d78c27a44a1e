"""The one scheduler (`distpro_lightning.compare.schedule`) of ``distpro compare`` and the
benchmarks: dependencies, priorities, tasks that finished ones make possible, failures."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from distpro_lightning.compare.schedule import schedule


@dataclass(frozen=True)
class Job:
    key: str
    deps: tuple[str, ...] = ()
    priority: float = 0.0


def test_dependencies_first_then_priority_then_the_order_given():
    a, b = Job("a", priority=1), Job("b", deps=("a",), priority=5)
    c, d = Job("c"), Job("d", priority=2)
    order: list[str] = []
    schedule([c, b, d, a], 1, lambda t: {}, lambda t, r: order.append(t.key))
    assert order == ["d", "a", "b", "c"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_tasks_that_finished_ones_make_possible_run_once_after_their_deps(jobs):
    a, b = Job("a"), Job("b", deps=("done-before",))
    c, d = Job("c", deps=("b",)), Job("d", deps=("elsewhere",))
    order: list[str] = []

    def more():
        return [c, d] if "a" in order else []  # asked again after every task: still once

    schedule([a, b], jobs, lambda t: {}, lambda t, r: order.append(t.key), more)
    assert sorted(order) == ["a", "b", "c", "d"] and order.index("c") > order.index("b")


def test_jobs_run_side_by_side():
    threads: set[int] = set()

    def run(task):
        threads.add(threading.get_ident())
        time.sleep(0.05)
        return {}

    schedule([Job(str(i)) for i in range(4)], 2, run, lambda t, r: None)
    assert len(threads) == 2


@pytest.mark.parametrize("where", ["run", "on_done"])
def test_a_failure_stops_new_tasks_and_the_running_ones_are_still_recorded(where):
    slow, bad, later = Job("slow", priority=2), Job("bad", priority=1), Job("later")
    done: list[str] = []

    def run(task):
        time.sleep(0.2 if task is slow else 0.01)
        if task is bad and where == "run":
            raise RuntimeError("bad broke")
        return {}

    def on_done(task, result):
        if task is bad and where == "on_done":
            raise RuntimeError("bad broke")
        done.append(task.key)

    with pytest.raises(RuntimeError, match="bad broke"):
        schedule([slow, bad, later], 2, run, on_done)
    assert done == ["slow"]  # recorded after the failure; "later" never started


@pytest.mark.parametrize("jobs", [1, 2])
def test_tasks_that_can_never_start_are_named(jobs):
    # a dependency on a task of the queue that waits for it in turn
    a, b = Job("a", deps=("b",)), Job("b", deps=("a",))
    with pytest.raises(RuntimeError, match="no task can start"):
        schedule([a, b], jobs, lambda t: {}, lambda t, r: None)


def test_two_tasks_with_one_key_are_refused_not_run_twice():
    ran: list[str] = []
    with pytest.raises(ValueError, match="share a key"):
        schedule([Job("a"), Job("a")], 1, lambda t: ran.append(t.key) or {}, lambda t, r: None)
    assert ran == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_tasks_of_one_key_that_more_returns_are_refused_too(jobs):
    ran: list[str] = []
    with pytest.raises(ValueError, match="share a key"):
        schedule([Job("a")], jobs, lambda t: ran.append(t.key) or {}, lambda t, r: None,
                 more=lambda: [Job("b"), Job("b")])  # fmt: skip
    assert ran == ["a"]
