"""Crash-safe file writes: temporary file in the same directory, fsync, ``os.replace``.

A reader (or a run resumed after a crash) therefore sees either the old or the new content of
``path``, never a truncated file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write"]


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
    # same directory as the target so that os.replace is a rename on one file system
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path
