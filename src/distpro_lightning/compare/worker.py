"""``python -m distpro_lightning.compare.worker SPEC RESULT``: one task of a comparison in a
fresh process (``jobs > 1``): the pair rebuilt from its source, the record written
atomically to ``RESULT``. A worker whose comparison is gone (killed, ``kill -9`` included)
stops within a second (`exit_with_parent`): the comparison resumed later runs its task
again, and two searches must never write one process file side by side."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from distpro_lightning.compare.pair import rebuild
from distpro_lightning.compare.plan import Task
from distpro_lightning.compare.runs import execute, lightning_info_off
from distpro_lightning.compare.settings import CompareSettings
from distpro_lightning.files import atomic_write_text

#: The environment variable through which a runner gives its workers its process id.
PARENT_ENV = "DISTPRO_COMPARE_PARENT"


def parent_env() -> dict[str, str]:
    """The environment of a worker of this process: ours, and our pid as its parent."""
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def exit_with_parent(interval_s: float = 0.5) -> threading.Thread:
    """Watch the parent process (the pid in `PARENT_ENV`, given before this process
    started, else the parent now); when it is gone (this process has another parent), end
    this one at once, also when it died while this one was still importing. Returns the
    (daemon) watcher thread."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(3)  # the comparison that would record this task's result is gone

    thread = threading.Thread(target=watch, name="compare-parent-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    exit_with_parent()
    spec = json.loads(Path(argv[0]).read_text())
    target, args = spec["source"]
    pair = rebuild((target, args))
    fields = {k: v for k, v in spec["task"].items() if k != "key"}
    task = Task(**{**fields, "deps": tuple(fields["deps"])})
    with lightning_info_off():
        record = execute(pair, CompareSettings(**spec["settings"]), task, spec["point"],
                         Path(spec["folder"]))  # fmt: skip
    atomic_write_text(argv[1], json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
