"""Opt-in hooks that let tests act on the trainer at an exact point instead of racing it.

Nothing here does anything unless its environment variable is set; the trainer calls
:func:`after_checkpoint` once a training checkpoint is on disk (all ranks past the barrier).

``LARGEKERNEL_TEST_STOP_AFTER_STEP=N``: after the checkpoint of step ``N`` the process stops
itself with ``SIGSTOP``. The parent test sees the stop (``waitpid(..., WUNTRACED)``) and then
signals it, e.g. ``SIGKILL`` for a crash that lands exactly after step ``N``'s checkpoint, or
``SIGINT`` followed by ``SIGCONT`` for an interrupt handled at the next step.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["STOP_AFTER_STEP_ENV", "after_checkpoint"]

log = logging.getLogger(__name__)

STOP_AFTER_STEP_ENV = "LARGEKERNEL_TEST_STOP_AFTER_STEP"


def after_checkpoint(step: int) -> None:
    """Run the hooks enabled in the environment for a checkpoint just written at ``step``.

    Example:
        >>> after_checkpoint(4)  # no-op unless LARGEKERNEL_TEST_STOP_AFTER_STEP=4 is set
    """
    value = os.environ.get(STOP_AFTER_STEP_ENV)
    if value and value.strip().isdigit() and int(value) == step and hasattr(signal, "SIGSTOP"):
        log.warning("%s=%s: stopping the process after the checkpoint of step %d", STOP_AFTER_STEP_ENV, value, step)
        os.kill(os.getpid(), signal.SIGSTOP)
