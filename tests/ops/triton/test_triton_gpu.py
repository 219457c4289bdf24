"""On a real GPU (marked ``gpu``, skipped without one): the compiled kernels vs float64 references.

Never run by its authors (no GPU was available). It runs in a fresh process because this test
session defines the kernels under Triton's interpreter (see conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from largekernel.ops import triton as lkt

    CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}
    CASES = [  # shape, multiplier, kernel, stride, padding, dilation
        ((8, 64, 56, 56), 1, (31, 31), (1, 1), (15, 15), (1, 1)),
        ((2, 48, 33, 29), 2, (13, 12), (2, 1), (6, 5), (1, 2)),
        ((1, 5, 7, 9), 1, (63, 63), (1, 1), (31, 31), (1, 1)),
        ((4, 256, 4096), 1, (1023,), (1,), (511,), (1,)),
        ((2, 24, 12, 14, 10), 1, (7, 7, 7), (1, 1, 1), (3, 3, 3), (1, 1, 1)),
    ]

    def err(a, b):
        return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()

    torch.manual_seed(0)
    for shape, mult, k, s, p, d in CASES:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for cl in (False, True):
                x = torch.randn(shape, device="cuda").to(dtype)
                if cl and x.dim() > 3:
                    x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
                w = torch.randn((shape[1] * mult, 1, *k), device="cuda").to(dtype)
                y = lkt.depthwise_forward(x, w, s, p, d)
                gy = torch.randn_like(y)
                xr = x.detach().double().cpu().requires_grad_(True)
                wr = w.detach().double().cpu().requires_grad_(True)
                yr = CONV[len(k)](xr, wr, None, s, p, d, shape[1])
                rgx, rgw = torch.autograd.grad(yr, (xr, wr), gy.double().cpu())
                gx = lkt.depthwise_grad_input(gy, w, x.shape, s, p, d)
                gw = lkt.depthwise_grad_weight(x, gy, k, s, p, d)
                gw_det = lkt.depthwise_grad_weight(x, gy, k, s, p, d, deterministic=True)
                assert torch.equal(gw_det, lkt.depthwise_grad_weight(x, gy, k, s, p, d, deterministic=True))
                for name, got, ref in (("y", y, yr), ("gx", gx, rgx), ("gw", gw, rgw), ("gw_det", gw_det, rgw)):
                    e = err(got, ref.detach())
                    assert e <= TOL[dtype], (shape, k, dtype, cl, name, e)

    x = torch.randn(1, 4, 9, 9, device="cuda")
    w = torch.randn(4, 1, 3, 3)
    for call, exc in (
        (lambda: lkt.depthwise_forward(x, w, (1, 1), (1, 1), (1, 1)), ValueError),  # weight on the CPU
        (lambda: lkt.depthwise_forward(x.double(), w.cuda().double(), (1, 1), (1, 1), (1, 1)), TypeError),
    ):
        try:
            call()
        except exc:
            pass
        else:
            raise AssertionError("bad input was accepted")
    assert lkt.is_available("cuda")
    print("OK")
    """
)


@pytest.mark.gpu
def test_compiled_kernels_on_cuda_match_float64():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
