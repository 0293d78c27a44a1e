"""The one job runner of the benchmarks: tasks with dependencies run ``jobs`` at a time
(`schedule`), each in this process or in a fresh interpreter (`in_subprocess`, which runs
``python -m <module> --worker SPEC RESULT``, the module's own ``--worker`` entry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from distpro_lightning.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


class Job(Protocol):
    """What `schedule` needs of a task."""

    key: str
    deps: tuple[str, ...]

    @property
    def priority(self) -> float: ...


def in_subprocess(
    module: str, payload: dict[str, Any], key: str, tmp: Path, threads: int
) -> dict[str, Any]:
    """Run one task in a fresh interpreter (own torch threads, no shared state): write
    ``payload`` as its spec, run ``python -m module --worker spec result`` from the
    repository root, return the result JSON; the log is shown if it fails."""
    safe = key.replace(":", "_").replace("=", "-").replace(",", "_")
    spec = tmp / f"{safe}.json"
    result = spec.with_suffix(".result.json")
    atomic_write_text(spec, json.dumps(payload))
    log = spec.with_suffix(".log")
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--worker", str(spec), str(result)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{key} failed (exit {proc.returncode}); its log ends with:\n{tail}")
    return json.loads(result.read_text())


def read_spec(spec_path: str) -> dict[str, Any]:
    """The payload `in_subprocess` wrote for a worker."""
    return json.loads(Path(spec_path).read_text())


def schedule(
    tasks: list[Any],
    jobs: int,
    run: Callable[[Any], dict[str, Any]],
    on_done: Callable[[Any, dict[str, Any]], None],
    more: Callable[[], list[Any]] | None = None,
) -> None:
    """Run ``tasks`` respecting their dependencies, ``jobs`` at a time, longest first.

    ``more``, called after each finished task, returns tasks that finishing it made
    possible; those with a key not seen yet join the queue (a dependency that is not a
    scheduled task counts as done, as for ``tasks``). A failed task stops new submissions;
    the running ones finish and are recorded (nothing already computed is lost), then the
    first error is raised."""
    pending = list(tasks)
    known = {t.key for t in tasks}
    finished = {d for t in tasks for d in t.deps} - known
    failure: BaseException | None = None

    def finish(task: Any, result: dict[str, Any]) -> None:
        on_done(task, result)
        finished.add(task.key)
        new = [t for t in (more() if more else []) if t.key not in known]
        known.update(t.key for t in new)
        finished.update(d for t in new for d in t.deps if d not in known)
        pending.extend(new)

    def ready() -> list[Any]:
        return sorted(
            (t for t in pending if all(d in finished for d in t.deps)),
            key=lambda t: -t.priority,
        )

    if jobs == 1:
        while pending:
            task = ready()[0]
            pending.remove(task)
            finish(task, run(task))
        return
    running: dict[Future[dict[str, Any]], Any] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            if failure is None:
                for task in ready()[: jobs - len(running)]:
                    pending.remove(task)
                    running[pool.submit(run, task)] = task
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                task = running.pop(fut)
                try:
                    result = fut.result()
                except Exception as err:  # noqa: BLE001 - re-raised once the others finish
                    failure = failure or err
                    continue
                finish(task, result)
    if failure is not None:
        raise failure
