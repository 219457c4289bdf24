"""Run the Triton kernels through Triton's CPU interpreter.

``triton.jit`` decides between compiling and interpreting when a kernel is *defined*, so the
kernel module is imported here with ``TRITON_INTERPRET=1``; every test then runs with the variable
set (and it is restored afterwards, so nothing leaks into the rest of the suite).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# Triton is a third-party optional dependency (Linux wheels only): without it, only the checks
# that need no kernels are collected
HAVE_TRITON = importlib.util.find_spec("triton") is not None
KERNELS_INTERPRETED = False
if not HAVE_TRITON:
    collect_ignore = [
        "test_triton_kernels.py",
        "test_triton_hypothesis.py",
        "test_triton_dispatch.py",
        "test_triton_bench.py",
    ]
else:
    _OLD = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from largekernel.ops.triton import launch as _launch  # defines the kernels interpreted
    finally:
        if _OLD is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _OLD
    import triton.runtime.interpreter as _interp

    KERNELS_INTERPRETED = type(_launch.dw_forward_kernel).__name__ == "InterpretedFunction"


@pytest.fixture(autouse=True)
def triton_interpreter(request, monkeypatch):
    """TRITON_INTERPRET=1 for the test (the kernels must have been defined interpreted).

    The interpreter checks every int32 operation for overflow by default, which doubles its (pure
    Python) cost; tests marked ``sanitize_overflow`` keep that check, the others turn it off.
    """
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if not HAVE_TRITON:
        yield
        return
    if not KERNELS_INTERPRETED:
        pytest.fail("the Triton kernels were imported before TRITON_INTERPRET=1 was set")
    builder = getattr(_interp, "interpreter_builder", None)
    if builder is not None and hasattr(builder, "options") and "sanitize_overflow" not in request.keywords:
        monkeypatch.setattr(builder, "options", _interp.InterpreterOptions(sanitize_overflow=False))
    torch.set_num_threads(1)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "sanitize_overflow: keep Triton's interpreter overflow checks on")
