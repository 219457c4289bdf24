"""Run inside ``scripts/sanitized-tests.sh`` by test_sanitizer.py: checks that the sanitizer is live.

Outside a sanitized run these tests are skipped (they need the ASan runtime preloaded).
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import pytest
import torch

SANITIZED = os.environ.get("LARGEKERNEL_SANITIZE") == "1" and "libasan" in os.environ.get("LD_PRELOAD", "")
pytestmark = pytest.mark.skipif(not SANITIZED, reason="only meaningful under scripts/sanitized-tests.sh")

OVERFLOW_C = r"""
#include <stdlib.h>
int lk_probe(int n) { int *a = malloc(sizeof(int) * n); a[n] = 1; int r = a[0]; free(a); return r; }
"""


def test_asan_runtime_is_loaded_and_the_kernels_are_sanitized():
    from largekernel.ops import cpu_kernels
    from largekernel.ops.cpu_kernels import build

    assert hasattr(ctypes.CDLL(None), "__asan_init")
    assert build.sanitize_enabled()
    assert cpu_kernels.is_available(), cpu_kernels.disable_reason()
    x = torch.randn(2, 5, 11, 13, dtype=torch.float64)
    gy = torch.randn(2, 5, 11, 13, dtype=torch.float64)
    gw = cpu_kernels.depthwise_grad_weight(x, gy, (7, 9), (1, 1), (3, 4), (1, 1))
    ref = torch.ops.aten.convolution_backward(
        gy, x, torch.zeros(5, 1, 7, 9, dtype=torch.float64), None, [1, 1], [3, 4], [1, 1], False, [0, 0], 5,
        [False, True, False],
    )[1]
    torch.testing.assert_close(gw, ref)


def test_overflow_probe(tmp_path):
    if os.environ.get("LK_SANITIZER_PROBE_OVERFLOW") != "1":
        pytest.skip("the deliberate overflow runs only when test_sanitizer.py asks for it")
    from largekernel.ops.cpu_kernels import build

    src = tmp_path / "probe.c"
    src.write_text(OVERFLOW_C)
    lib = tmp_path / "probe.so"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run([build.find_compiler(), *build.CFLAGS, *build.SANITIZE_FLAGS, "-o", str(lib), str(src)],
                   check=True, env=env)
    ctypes.CDLL(str(lib)).lk_probe(4)  # ASan aborts the process here
