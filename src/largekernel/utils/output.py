"""Output paths: check that a run can write everything before it starts, and report write failures.

Training for an hour and then failing to save is the worst way to learn that ``--output`` is a
read-only directory. :func:`check_writable` creates the directory, writes and removes a probe
file, and checks that no artefact name is taken by a directory; :func:`write_output` writes a
file atomically and turns any ``OSError`` into :class:`largekernel.errors.OutputError` naming
the path (never a traceback, never a half-written file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from largekernel.errors import OutputError
from largekernel.utils.atomic import atomic_write

__all__ = ["check_writable", "write_output"]


def _describe(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def check_writable(directory: str | os.PathLike, *, files: Iterable[str] = (), dirs: Iterable[str] = ()) -> Path:
    """Make sure ``directory`` exists (creating it) and that files can be written in it.

    Args:
        directory: The output directory.
        files: Names that will be written in it (each must not be an existing directory).
        dirs: Sub-directories that will be written to (each checked the same way).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: The path is a file, cannot be created, or is not writable (named).

    Example:
        >>> import tempfile, os
        >>> check_writable(os.path.join(tempfile.mkdtemp(), "run"), files=["model.safetensors"]).is_dir()
        True
    """
    directory = Path(directory)
    for target in [directory, *(directory / d for d in dirs)]:
        if target.exists() and not target.is_dir():
            raise OutputError(f"output directory {target} is a file, not a directory; choose another --output",
                              path=target)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create output directory {target}: {_describe(err)}", path=target) from None
        try:  # access() misses read-only mounts, immutable attributes and ACLs: really write
            fd, probe = tempfile.mkstemp(prefix=".largekernel-write-test.", dir=target)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputError(f"output directory {target} is not writable: {_describe(err)}", path=target) from None
    for name in files:
        path = directory / name
        # (an existing file is replaced by a rename: the directory's writability, probed above, is what counts)
        if path.is_dir():
            raise OutputError(f"cannot write {path}: a directory of that name is in the way", path=path)
    return directory


def write_output(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """:func:`~largekernel.utils.atomic.atomic_write`, with ``OSError`` -> :class:`OutputError` naming ``path``.

    Example:
        >>> import tempfile, os
        >>> write_output(os.path.join(tempfile.mkdtemp(), "a.txt"), lambda f: f.write(b"ok")).read_bytes()
        b'ok'
    """
    try:
        return atomic_write(path, write)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_describe(err)}", path=path) from None
