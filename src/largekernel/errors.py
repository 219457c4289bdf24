"""The exceptions largekernel raises for bad input, in one place.

Every error a user can cause (a bad option, file, checkpoint, image or output path, or a run
that would not fit in memory) is one of the classes below. Each is also a :class:`ValueError`
(and :class:`CheckpointError` a :class:`RuntimeError`, as it always was), so code that caught
those keeps working, and the ``largekernel`` command reports every one of them as a single line
on stderr with exit code 2, never a traceback.

==============================  ===========================================================
exception                       raised when
==============================  ===========================================================
:class:`ConfigError`            an option has the wrong type, range, or is NaN/infinite, an
                                enum value is unknown, or two options contradict each other
:class:`CheckpointError`        a checkpoint or its ``model.json`` is missing, unreadable,
                                unsafe, malformed, or does not fit the model it describes
:class:`CheckpointNotFoundError` (a :class:`CheckpointError` and a :class:`FileNotFoundError`)
:class:`ImageError`             an image file is corrupt, truncated, or a decompression bomb
:class:`OutputError`            an output path cannot be written (before or during a run)
:class:`InsufficientMemoryError` the estimated memory of a model/run exceeds what the machine
                                has (pass ``allow_large=true`` / ``--force`` to insist)
==============================  ===========================================================

Example:
    >>> from largekernel.errors import ConfigError
    >>> try:
    ...     raise ConfigError("lr must be a finite number > 0, got nan", key="lr", value=float("nan"))
    ... except ValueError as err:
    ...     err.key
    'lr'
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LargeKernelError",
    "ConfigError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ImageError",
    "OutputError",
    "InsufficientMemoryError",
]


class LargeKernelError(Exception):
    """Base class of every documented largekernel input error."""


class ConfigError(LargeKernelError, ValueError):
    """An invalid option; the message names the key, the value and what was expected.

    Attributes:
        key: The (dotted) option name, if known.
        value: The offending value, if known.
    """

    def __init__(self, message: str, *, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class CheckpointError(LargeKernelError, RuntimeError, ValueError):
    """A checkpoint could not be read or does not fit the model (the message names file and key)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file (or run directory) does not exist."""


class ImageError(LargeKernelError, ValueError):
    """An image file cannot be used (corrupt, truncated, unsupported or a decompression bomb).

    Attributes:
        path: The image file.
    """

    def __init__(self, message: str, *, path: Any = None) -> None:
        super().__init__(message)
        self.path = path


class OutputError(LargeKernelError, ValueError):
    """An output file or directory cannot be written.

    Attributes:
        path: The path that could not be written.
    """

    def __init__(self, message: str, *, path: Any = None) -> None:
        super().__init__(message)
        self.path = path


class InsufficientMemoryError(LargeKernelError, ValueError):
    """The estimated memory exceeds the memory available (bytes in ``estimate``/``available``)."""

    def __init__(self, message: str, *, estimate: int | None = None, available: int | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.available = available
