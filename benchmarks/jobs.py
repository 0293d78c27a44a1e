"""The benchmarks' jobs: tasks with dependencies run ``jobs`` at a time by the library's
scheduler (`distpro_lightning.compare.schedule`, the one ``distpro compare`` uses), each
in this process or in a fresh interpreter (`in_subprocess`, which runs ``python -m <module>
--worker SPEC RESULT``, the module's own ``--worker`` entry)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from distpro_lightning.compare.schedule import Job, schedule  # noqa: F401 - the benchmarks' own
from distpro_lightning.compare.worker import exit_with_parent, parent_env
from distpro_lightning.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


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
            env={**parent_env(), "OMP_NUM_THREADS": str(threads)},
        )
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{key} failed (exit {proc.returncode}); its log ends with:\n{tail}")
    return json.loads(result.read_text())


def read_spec(spec_path: str) -> dict[str, Any]:
    """The payload `in_subprocess` wrote for a worker; from here on the worker stops when
    its runner is gone (`kill -9` included: `exit_with_parent`), as ``distpro compare``'s."""
    exit_with_parent()
    return json.loads(Path(spec_path).read_text())
