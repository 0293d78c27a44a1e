"""Checks on a run's output files, made before the first step so no search is lost.

* `check_save_path` — a process ``save_path`` must be a writable file path: not
  empty, not a directory, not one of the plot images written beside it; ``~`` is expanded.
* `check_overwrite` — an existing process file of *another run* is never replaced
  unless ``overwrite=True``.

**How a run is identified.** A search gets a run id (`new_run_id`) when it starts a
new process; the id is written into the process file (``run_id``, format version 2) and
into the search callback's checkpoint state, so a resumed run keeps it. An existing file
may be replaced only by the run whose id it holds. A file without an id (format version 1,
or a process built by hand), a file that is not a readable process file, and a file of
another id are refused, with the file's details and the ways out in the message.

**Where a process goes by default.** `default_process_path` puts it in the run's own
log folder, the way ``ModelCheckpoint`` chooses its ``dirpath``: with a logger,
``<save_dir>/<name>/<version>/process.json`` (TensorBoard and CSV: the run's ``version_N``
folder; W&B: the run id), else ``<default_root_dir>/process.json``. Every run of a sweep thus
writes its own file.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from distpro_lightning.errors import DistProError
from distpro_lightning.files import temp_prefix
from distpro_lightning.process.core import DistillationProcess, ProcessFileError
from distpro_lightning.process.plots import plot_paths


class OutputPathError(DistProError, ValueError):
    """An output path that cannot be written, or would destroy another file."""


def new_run_id() -> str:
    """A new run id: UTC time and 8 random hex digits, e.g. ``20250301T101502Z-1a2b3c4d``."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


#: The file name of a process in a run's log folder (`default_process_path`).
DEFAULT_PROCESS_NAME = "process.json"


def default_process_path(trainer: Any) -> Path:
    """The process file of ``trainer``'s run, in its log folder (see the module docs); the
    same on every rank (rank 0's choice is broadcast)."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        folder = os.path.join(save_dir, str(logger.name), version)
    else:
        folder = trainer.default_root_dir
    return Path(trainer.strategy.broadcast(os.path.join(folder, DEFAULT_PROCESS_NAME)))


def _parent_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written in its folder (created if missing), or ``None``. The
    probe file has the name pattern of an atomic write to ``path``, so a kill during the
    probe leaves nothing the next save does not remove."""
    parent = path.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{str(ancestor)!r} is a file, so the folder {str(parent)!r} cannot be made"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=temp_prefix(path), suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in the folder {str(parent)!r} ({exc.strerror or exc})"
    return None


def check_save_path(save_path: str | os.PathLike[str], plot: bool = True) -> Path:
    """Check a process file path before any compute is spent; returns it with ``~``
    expanded. Creates its folder (as the first save would) and probes that a file can be
    written there. With ``plot=True`` the path may not be one of the images of
    `plot_paths`, and those may not be directories.

    Raises:
        OutputPathError: the message names the path, the problem and the fix.
    """
    if not isinstance(save_path, str | os.PathLike):
        raise OutputPathError(
            f"save_path must be a file path (str), got {type(save_path).__name__}."
        )
    raw = os.fspath(save_path)
    example = "e.g. 'runs/search/process.json'"
    if not raw.strip():
        raise OutputPathError(
            f"save_path is empty: give the process file's path ({example}), or save_path=None "
            "to write no file."
        )
    path = check_file_target(raw, "save_path")
    if plot:
        for kind, image in plot_paths(path).items():
            if image == path:
                raise OutputPathError(
                    f"save_path {raw!r} is also the file of the {kind} plot written beside the "
                    f"process, which would overwrite it: use a '.json' name, e.g. "
                    f"{str(path.with_suffix('.json'))!r}."
                )
            if image.is_dir():
                raise OutputPathError(
                    f"The {kind} plot of save_path {raw!r} would go to {str(image)!r}, which is a "
                    "directory: choose another save_path or pass plot=False."
                )
    check_writable(raw, path, "save_path")
    return path


def check_file_target(raw: str, what: str) -> Path:
    """``raw`` (``~`` expanded) as the path of a file to write, refused when it names a
    folder (or ends in ``/``) or something that is not a regular file; ``what`` names it in
    the message (``"save_path"``, ``"-o"``)."""
    path = Path(raw).expanduser()
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise OutputPathError(
            f"{what} {raw!r} is a directory: give a file path inside it, e.g. "
            f"{str(path / 'process.json')!r}."
        )
    if path.exists() and not path.is_file():
        raise OutputPathError(
            f"{what} {raw!r} exists and is not a regular file: give the path of a file."
        )
    return path


def check_writable(raw: str, path: Path, what: str) -> None:
    """Refuse ``path`` (``raw`` as given) when its folder cannot be made or written in;
    creates the folder, as the write would."""
    problem = _parent_problem(path)
    if problem:
        raise OutputPathError(
            f"{what} {raw!r} cannot be written: {problem}. Choose a writable location."
        )


def check_overwrite(
    path: str | os.PathLike[str], run_id: str | None, overwrite: bool = False
) -> None:
    """Refuse to replace an existing file at ``path`` unless it is the process file of the
    run ``run_id`` (a resume) or ``overwrite=True``. See the module docs for run ids.

    Raises:
        FileExistsError: naming the file, whose it is, and the ways out.
    """
    path = Path(path).expanduser()
    if overwrite or not path.exists():
        return
    ways_out = (
        "Choose another save_path (e.g. in this run's log directory), move the file away, or "
        "pass overwrite=True to replace it."
    )
    try:
        existing = DistillationProcess.load(path)
    except (ProcessFileError, OSError) as exc:
        raise FileExistsError(
            f"{str(path)!r} exists and is not a readable process file ({exc}); refusing to "
            f"replace it. {ways_out}"
        ) from None
    if run_id is not None and existing.run_id == run_id:
        return
    created = existing.provenance.get("created", "unknown time")
    owner = f"run {existing.run_id}" if existing.run_id else "a run without a run id"
    raise FileExistsError(
        f"{str(path)!r} holds the process of another search ({owner}, created {created}, "
        f"{len(existing)} steps, fingerprint {existing.fingerprint()}); refusing to replace it. "
        f"To continue that search, resume it from its checkpoint. {ways_out}"
    )


#: The placeholder of a run's log directory in ``search.output.save_path`` (``distpro fit``).
LOG_DIR_PLACEHOLDER = "{log_dir}"


def run_log_dir(trainer: Any) -> str:
    """The directory of this run's logs: the logger's versioned ``log_dir`` (CSV,
    TensorBoard), ``save_dir/name/version`` for the others (W&B: the run id), where
    ``ModelCheckpoint`` puts its files by default; ``default_root_dir`` without a logger."""
    logger = trainer.logger
    if logger is None:
        return str(trainer.default_root_dir)
    log_dir = getattr(logger, "log_dir", None)
    if log_dir is not None:
        return str(log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return os.path.join(str(save_dir), str(logger.name), version)


def with_log_dir(path: str | None, trainer: Any) -> str | None:
    """``path`` with `LOG_DIR_PLACEHOLDER` replaced by `run_log_dir`; any other ``{...}``
    (a mistyped placeholder such as ``{LOG_DIR}``) is refused instead of becoming a folder."""
    if path is None:
        return path
    other = sorted(set(re.findall(r"\{[^{}]*\}", str(path))) - {LOG_DIR_PLACEHOLDER})
    if other:
        raise OutputPathError(
            f"save_path {str(path)!r} holds {', '.join(other)}: the only placeholder is "
            f"{LOG_DIR_PLACEHOLDER!r} (the run's log folder). Fix the spelling, e.g. "
            "'{log_dir}/process.json'."
        )
    if LOG_DIR_PLACEHOLDER not in str(path):
        return path
    return str(path).replace(LOG_DIR_PLACEHOLDER, run_log_dir(trainer))
