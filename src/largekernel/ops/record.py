"""A record of which implementation actually ran, for tests and for ``explain`` after the fact.

The dispatcher's :class:`~largekernel.ops.dispatch.Plan` says what *should* run; fallbacks (a
compiled kernel that is unavailable, a flipped kernel that is no longer depthwise) can change
that. Every implementation entry point reports what it executed to the recorders active on the
current thread, so a test can assert that the compiled weight gradient really ran instead of
trusting the plan.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

__all__ = ["ExecutedStep", "record_impls", "note", "ForcedImplementationError"]


class ForcedImplementationError(RuntimeError):
    """An implementation forced with :func:`~largekernel.ops.force_impl` cannot serve the call."""


@dataclass(frozen=True)
class ExecutedStep:
    """One executed step of a convolution.

    Attributes:
        stage: ``"forward"``, ``"grad_input"`` or ``"grad_weight"``.
        impl: the implementation that ran (e.g. ``"kernels"``, ``"native_cl"``, ``"fft"``,
            ``"aten"``, ``"torch"`` for a plain PyTorch call differentiated by autograd).
        nd: spatial rank of the convolution.
    """

    stage: str
    impl: str
    nd: int


class _Recorders(threading.local):
    def __init__(self) -> None:
        self.stack: list[list[ExecutedStep]] = []


_RECORDERS = _Recorders()


def note(stage: str, impl: str, nd: int) -> None:
    """Report an executed step to every active recorder of this thread (no-op when none)."""
    if _RECORDERS.stack:
        step = ExecutedStep(stage, impl, nd)
        for rec in _RECORDERS.stack:
            rec.append(step)


@contextlib.contextmanager
def record_impls():
    """Record every convolution step executed on this thread inside the block.

    Backward passes run on autograd's worker thread for CUDA tensors but on the calling thread for
    CPU tensors, so CPU backward steps are recorded too.

    Yields:
        A list that fills with :class:`ExecutedStep` entries in execution order.

    Example:
        >>> import torch
        >>> from largekernel import ops
        >>> x = torch.randn(1, 4, 16, 16, requires_grad=True)
        >>> w = torch.randn(4, 1, 9, 9, requires_grad=True)
        >>> with ops.record_impls() as steps:
        ...     ops.conv(x, w, padding=4, groups=4).sum().backward()
        >>> sorted({s.stage for s in steps})
        ['forward', 'grad_input', 'grad_weight']
    """
    steps: list[ExecutedStep] = []
    _RECORDERS.stack.append(steps)
    try:
        yield steps
    finally:
        stack = _RECORDERS.stack
        for i in range(len(stack) - 1, -1, -1):  # by identity: two empty lists compare equal
            if stack[i] is steps:
                del stack[i]
                break
