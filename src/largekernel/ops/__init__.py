"""The convolution engine: one dispatcher over native, FFT and compiled implementations.

Public API:
    conv: drop-in for ``F.conv1d/2d/3d`` routed to the fastest implementation.
    explain: which implementations ``conv`` would pick for given shapes, and why.
    force_impl: context manager forcing implementations (tests/benchmarks).
    set_autotune / get_autotune / deterministic / clear_autotune_cache: autotuning control.
    Plan: the dispatcher's decision.
    record_impls: context manager recording which implementation actually ran (tests).
    ForcedImplementationError: a forced implementation cannot serve a call.
"""

from largekernel.ops.conv import conv, explain
from largekernel.ops.record import ExecutedStep, ForcedImplementationError, record_impls
from largekernel.ops.dispatch import (
    Plan,
    clear_autotune_cache,
    deterministic,
    force_impl,
    get_autotune,
    set_autotune,
)

__all__ = [
    "conv",
    "explain",
    "Plan",
    "force_impl",
    "set_autotune",
    "get_autotune",
    "deterministic",
    "clear_autotune_cache",
    "record_impls",
    "ExecutedStep",
    "ForcedImplementationError",
]
