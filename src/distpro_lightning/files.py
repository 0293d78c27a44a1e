"""Atomic text files, and clean-up of the temporary files a killed write leaves behind.

`atomic_write_text` writes ``.<name>.<pid>-<random>.tmp`` next to the target, then
renames it over the target. A ``kill -9`` between the two leaves that hidden, full-size
file; the next write to the same target removes it (`remove_stale_temps`). Only our
own name pattern next to that one target is touched, and only when the writer that made
it is gone: its process id is not running here, is our own (a restarted container often
gets the same id), or the file is older than `STALE_AFTER_S`. The pattern of earlier
versions, ``.<name>.<random>.tmp`` (no process id), is removed on age alone.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

#: A temporary file untouched this long (seconds) is stale whoever wrote it.
STALE_AFTER_S = 3600.0


def temp_prefix(path: Path) -> str:
    """The prefix of `atomic_write_text`'s temporary files for ``path`` (this process)."""
    return f".{path.name}.{os.getpid()}-"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    # mkstemp's random part: 8 characters of [a-z0-9_].
    return re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)-)?[a-z0-9_]{8}\.tmp")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of interrupted `atomic_write_text` calls for ``path``."""
    path = Path(path)
    pattern = _temp_pattern(path)
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    stale = []
    now = time.time()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        dead = pid is not None and (pid == os.getpid() or not _pid_running(pid))
        if old or dead:
            stale.append(path.parent / entry.name)
    return sorted(stale)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete `stale_temps` of ``path``; returns what was removed. A file that cannot
    be removed gives a warning naming it (the write itself goes on)."""
    removed = []
    for tmp in stale_temps(path):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(
                f"Could not remove {str(tmp)!r}, left by an interrupted write of {str(path)!r}: "
                f"{exc}. Delete it by hand.",
                stacklevel=2,
            )
    return removed


def _file_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the existing file's, else
    ``0o666`` less the process umask (read from ``/proc``, so the umask is never changed;
    ``0o022`` assumed where it cannot be read)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    umask = 0o022
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


def write_error(path: Path, exc: OSError) -> OSError:
    """``exc`` (of the same class) told about ``path``, the file the caller chose, rather
    than the temporary file or folder the write failed on, with the fix."""
    message = f"Cannot write {str(path)!r} ({exc.strerror or exc}): choose a writable location."
    try:
        return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    except TypeError:  # a subclass with another signature
        return OSError(exc.errno, message)


def _check_target(path: Path) -> None:
    """Refuse a target that a rename would destroy or cannot replace: a folder, a device,
    a pipe or a socket (``os.replace`` would put a file in place of ``/dev/null``)."""
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"Cannot write {str(path)!r}: it is a folder; give a file path inside it."
        )
    if path.exists() and not path.is_file():
        raise FileExistsError(
            errno.EEXIST,
            f"Cannot write {str(path)!r}: it exists and is not a regular file (a device, pipe "
            "or socket); give a file path.",
        )


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(binary_file)`` into a temporary file in the same
    folder, then rename it into place: readers see the old file or the new one, never a
    part. The library's one atomic writer (process files, figures, student exports).

    The file keeps the permissions an ordinary write would give it (``mkstemp``'s private
    ``0o600`` is not carried over to the result). Temporary files of earlier, interrupted
    writes to ``path`` are removed first (`remove_stale_temps`). A folder, a device or any
    other file that is not a regular one is refused; an ``OSError`` names ``path``, never
    the temporary file (`write_error`)."""
    path = Path(path)
    _check_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        mode = _file_mode(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write` of UTF-8 ``text``."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def atomic_save_figure(path: str | os.PathLike[str], figure: Any, dpi: int = 110) -> Path:
    """`atomic_write` of a matplotlib ``figure``; the image format comes from the suffix of
    ``path`` (``.png``, ``.pdf``, ``.svg``, ...; PNG when it has none)."""
    path = Path(path)
    image_format = path.suffix[1:].lower() or "png"
    return atomic_write(path, lambda fh: figure.savefig(fh, dpi=dpi, format=image_format))


@contextmanager
def folder_lock(
    folder: str | os.PathLike[str], on_wait: Callable[[], object] | None = None
) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``folder`` while the block runs, so
    a check of a file in it and the write that depends on the check happen as one step for
    every writer that takes the same lock (two fits saving to one ``save_path``). The lock
    is on the folder itself: no lock file is left behind. ``on_wait`` is called once when
    another process holds the lock (before waiting for it). Where ``fcntl`` does not exist
    (Windows), the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
