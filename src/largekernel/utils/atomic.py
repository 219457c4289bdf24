"""Crash-safe file writes: temporary file in the same directory, fsync, ``os.replace``.

A reader (or a run resumed after a crash) therefore sees either the old or the new content of
``path``, never a truncated file. The new file gets the permissions ``open()``/``torch.save``
would give it (``0o666`` minus the umask, or the mode of the file it replaces), not
``mkstemp``'s private ``0o600``. A process killed with SIGKILL between creating and renaming
its temporary file leaves ``.<name>.lk<pid>-<random>.tmp`` behind; :func:`remove_orphan_temp_files`
deletes those whose writer is gone (the trainer calls it when a run starts).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "default_file_mode", "remove_orphan_temp_files"]

log = logging.getLogger(__name__)

_TMP_RE = re.compile(r"^\..+\.lk(\d+)-[A-Za-z0-9_]+\.tmp$")
# temporaries written by older versions carried no pid: removed once they are clearly stale
_OLD_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_OLD_TMP_AGE = 3600.0


def _umask() -> int:
    # /proc/self/status has it without the process-wide (thread-unsafe) os.umask() dance
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode(path: str | os.PathLike | None = None) -> int:
    """The mode a new file gets from ``open()``: ``0o666 & ~umask`` (or ``path``'s current mode).

    Example:
        >>> default_file_mode() & 0o600
        384
    """
    if path is not None:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    return 0o666 & ~_umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_orphan_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that :func:`atomic_write` left in ``directory`` when its process died.

    A temporary file is an orphan when the process that wrote it no longer exists (its pid is
    in the name), or, for files written before pids were recorded, when it is over an hour old.
    Files of live writers are left alone.

    Returns:
        The deleted paths.

    Example:
        >>> import tempfile
        >>> remove_orphan_temp_files(tempfile.mkdtemp())
        []
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for p in directory.iterdir():
        m = _TMP_RE.match(p.name)
        if m:
            orphan = not _pid_alive(int(m.group(1)))
        elif _OLD_TMP_RE.match(p.name):
            try:
                orphan = now - p.stat().st_mtime > _OLD_TMP_AGE
            except OSError:
                continue
        else:
            continue
        if orphan and p.is_file():
            try:
                p.unlink()
            except OSError as err:
                log.warning("could not remove orphan temporary file %s: %s", p, err)
                continue
            log.info("removed orphan temporary file %s (left by an interrupted write)", p)
            removed.append(p)
    return removed


def _fsync_dir(path: Path) -> None:
    """Persist the directory entry created by ``os.replace`` (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``path`` atomically: ``write(fileobj)`` into a temp file, fsync, ``os.replace``.

    On any error the temp file is removed and ``path`` keeps its previous content. Parent
    directories are created as needed.

    Args:
        path: Destination file.
        write: Called once with a binary file object open for writing.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile, os
        >>> p = atomic_write(os.path.join(tempfile.mkdtemp(), "a.bin"), lambda f: f.write(b"hi"))
        >>> p.read_bytes()
        b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    mode = default_file_mode(path)
    # same directory as the target so that os.replace is a rename on one file system; the pid
    # in the name lets the next run tell an orphan (writer killed) from a write in progress
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.lk{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            # e.g. ENOSPC from write(): name the file the caller was writing
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise
    _fsync_dir(path.parent)
    return path
