"""``python -m distpro_lightning.compare.worker SPEC RESULT``: one task of a comparison in a
fresh process (``jobs > 1``): the pair rebuilt from its source, the record written
atomically to ``RESULT``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distpro_lightning.compare.pair import rebuild
from distpro_lightning.compare.plan import Task
from distpro_lightning.compare.runs import execute
from distpro_lightning.compare.settings import CompareSettings
from distpro_lightning.files import atomic_write_text


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    target, args = spec["source"]
    pair = rebuild((target, args))
    fields = {k: v for k, v in spec["task"].items() if k != "key"}
    task = Task(**{**fields, "deps": tuple(fields["deps"])})
    record = execute(pair, CompareSettings(**spec["settings"]), task, spec["point"],
                     Path(spec["folder"]))  # fmt: skip
    atomic_write_text(argv[1], json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
