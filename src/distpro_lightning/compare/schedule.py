"""Tasks with dependencies, ``jobs`` at a time: the one scheduler of ``distpro compare``
and of the project's benchmarks.

`schedule` runs the tasks whose dependencies are done, highest ``priority`` first (in the
order given on a tie); after every finished task ``more`` may add the tasks that finishing
it made possible (a widened grid, the runs of a final choice). A failure (of a task or of
``on_done``) stops new submissions; the tasks already running finish and are handed to
``on_done`` (nothing already computed is lost), then the first error is raised."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol


class Job(Protocol):
    """What `schedule` needs of a task: a unique key, the keys it waits for, a priority."""

    key: str
    deps: tuple[str, ...]

    @property
    def priority(self) -> float: ...


def unique(tasks: list[Any]) -> list[Any]:
    """``tasks``, refused when two share a key (each would run twice)."""
    keys = [t.key for t in tasks]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(
            f"schedule: tasks share a key ({repeated}): each would run twice; give every "
            "task its own key."
        )
    return tasks


class Queue:
    """The tasks not started yet and the keys finished; a dependency that is not a task of
    the queue counts as done (done before the call)."""

    def __init__(self, tasks: list[Any], more: Callable[[], list[Any]] | None) -> None:
        self.pending, self.more = list(unique(tasks)), more
        self.known = {t.key for t in tasks}
        self.finished = {d for t in tasks for d in t.deps} - self.known

    def ready(self) -> list[Any]:
        runnable = [t for t in self.pending if all(d in self.finished for d in t.deps)]
        return sorted(runnable, key=lambda t: -t.priority)

    def take(self, task: Any) -> Any:
        self.pending.remove(task)
        return task

    def done(self, task: Any) -> None:
        self.finished.add(task.key)
        new = [t for t in unique(self.more() if self.more else []) if t.key not in self.known]
        self.known.update(t.key for t in new)
        self.finished.update(d for t in new for d in t.deps if d not in self.known)
        self.pending.extend(new)

    def stuck(self) -> RuntimeError:
        waits = {t.key: [d for d in t.deps if d not in self.finished] for t in self.pending}
        return RuntimeError(f"schedule: no task can start; they wait for {waits}")


def schedule(
    tasks: list[Any],
    jobs: int,
    run: Callable[[Any], dict[str, Any]],
    on_done: Callable[[Any, dict[str, Any]], None],
    more: Callable[[], list[Any]] | None = None,
) -> None:
    """Run ``tasks`` (`Job`) by their dependencies, ``jobs`` at a time (see the module
    docs); ``jobs == 1`` runs them in this thread, one after the other."""
    queue = Queue(tasks, more)
    if jobs == 1:
        while queue.pending:
            ready = queue.ready()
            if not ready:
                raise queue.stuck()
            task = queue.take(ready[0])
            on_done(task, run(task))
            queue.done(task)
        return
    running: dict[Future[dict[str, Any]], Any] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while queue.pending or running:
            if failure is None:
                for task in queue.ready()[: jobs - len(running)]:
                    running[pool.submit(run, queue.take(task))] = task
            if not running:
                if failure is None and queue.pending:
                    failure = queue.stuck()
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    on_done(task, future.result())
                    queue.done(task)
                except Exception as err:  # noqa: BLE001 - raised once the others finish
                    failure = failure or err
    if failure is not None:
        raise failure
