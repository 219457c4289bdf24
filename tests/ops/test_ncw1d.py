"""The 1-D NCW row kernels (``cpu_kernels/ncw1d``) against float64 ``F.conv1d`` and its autograd.

Every test also checks that the row path really ran (the blocked kernels compute the same
numbers, so agreement alone would not show it): ``ncw1d.forward`` / ``ncw1d.grad_weight`` are
wrapped to count their calls.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import largekernel.ops as lko
from largekernel.ops import cpu_kernels as ck
from largekernel.ops.cpu_kernels import ncw1d
from largekernel.ops.dispatch import force_impl

pytestmark = pytest.mark.skipif(not ck.is_available(), reason=f"native kernels unavailable: {ck.disable_reason()}")

_TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


@pytest.fixture
def calls(monkeypatch):
    seen = {"forward": 0, "grad_weight": 0}
    real_fwd, real_gw = ncw1d.forward, ncw1d.grad_weight

    def forward(*a, **kw):
        seen["forward"] += 1
        return real_fwd(*a, **kw)

    def grad_weight(*a, **kw):
        seen["grad_weight"] += 1
        return real_gw(*a, **kw)

    monkeypatch.setattr(ncw1d, "forward", forward)
    monkeypatch.setattr(ncw1d, "grad_weight", grad_weight)
    return seen


def _rel(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def _reference(x, w, pair, dilation, grad_out):
    """float64 output and weight gradient of conv1d on the explicitly padded (or cropped) input."""
    xp = F.pad(x.double(), pair)
    wd = w.double().requires_grad_()
    y = F.conv1d(xp, wd, dilation=dilation, groups=x.shape[1])
    (gw,) = torch.autograd.grad(y, wd, grad_out.double()) if grad_out is not None else (None,)
    return y.detach(), gw


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), c=st.integers(1, 20), length=st.integers(1, 300), k=st.integers(1, 70),
    lo=st.integers(-3, 40), hi=st.integers(-3, 40), dilation=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]), strided=st.booleans(),
)
def test_forward_and_grad_weight_match_float64(calls, n, c, length, k, lo, hi, dilation, dtype, strided):
    out_len = length + lo + hi - dilation * (k - 1)
    assume(out_len >= 1 and lo < length + hi and hi < length + lo)
    g = torch.Generator().manual_seed(n * 1000 + c * 10 + k)
    x = torch.randn(n, c, length, dtype=dtype, generator=g)
    if strided:  # rows of a bigger buffer: batch and channel strides are not the packed ones
        x = torch.randn(n, c + 3, length + 5, dtype=dtype, generator=g)[:, 1:c + 1, 2:length + 2]
    w = torch.randn(c, 1, k, dtype=dtype, generator=g)
    grad_out = torch.randn(n, c, out_len, dtype=dtype, generator=g)
    ref_y, ref_gw = _reference(x, w, (lo, hi), dilation, grad_out)
    before = dict(calls)
    y = ck.depthwise_forward(x, w, 1, ((lo, hi),), dilation)
    gw = ck.depthwise_grad_weight(x, grad_out, (k,), (1,), ((lo, hi),), (dilation,))
    assert calls["forward"] == before["forward"] + 1 and calls["grad_weight"] == before["grad_weight"] + 1
    assert y.shape == ref_y.shape and y.dtype == dtype and y.is_contiguous()
    assert _rel(y, ref_y) < _TOL[dtype]
    assert gw.shape == (c, 1, k) and _rel(gw, ref_gw) < _TOL[dtype] * (10 if dtype == torch.float32 else 1)


def test_long_rows_and_kernels_sum_accurately(calls):
    # 16k positions x 4 samples per channel: float32 sums must stay near float64 (two-level sums)
    x = torch.randn(4, 3, 16384)
    w = torch.randn(3, 1, 127)
    grad_out = torch.randn(4, 3, 16384)
    ref_y, ref_gw = _reference(x, w, (63, 63), 1, grad_out)
    assert _rel(ck.depthwise_forward(x, w, 1, 63, 1), ref_y) < 2e-6
    assert _rel(ck.depthwise_grad_weight(x, grad_out, (127,), (1,), (63,), (1,)), ref_gw) < 2e-6
    assert calls == {"forward": 1, "grad_weight": 1}


def test_layouts_it_does_not_serve(calls):
    x = torch.randn(2, 32, 50)
    w = torch.randn(32, 1, 7)
    channels_last = x.transpose(1, 2).contiguous().transpose(1, 2)  # (N, L, C) storage
    torch.testing.assert_close(ck.depthwise_forward(channels_last, w, 1, 3, 1),
                               F.conv1d(x, w, padding=3, groups=32), rtol=1e-5, atol=1e-5)
    ck.depthwise_forward(x, w, 2, 3, 1)  # stride 2: the blocked kernels
    ck.depthwise_forward(x[..., ::2], w, 1, 3, 1)  # a strided length axis
    assert calls["forward"] == 0
    ck.depthwise_forward(x, w, 1, 3, 1)
    assert calls["forward"] == 1


def test_engine_conv_runs_it_forward_and_backward(calls):
    """``largekernel.ops.conv`` with the compiled kernels: forward, grad_input (a forward with the
    flipped kernel) and grad_weight all go through the row kernels; gradients are exact."""
    x = torch.randn(2, 6, 90, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, 13, dtype=torch.float64, requires_grad=True)
    with force_impl(forward="kernels", grad_input="kernels", grad_weight="kernels"), lko.record_impls() as rec:
        y = lko.conv(x, w, padding=6, groups=6)
        gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    assert calls == {"forward": 2, "grad_weight": 1}
    assert {r.impl for r in rec} == {"kernels"}
    y_ref = F.conv1d(x, w, padding=6, groups=6)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), torch.ones_like(y_ref))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-12, atol=1e-12)


def test_out_of_memory_is_an_error_not_a_crash(monkeypatch):
    def failing(*args):
        return 1

    run = ncw1d._checked(failing)
    with pytest.raises(MemoryError, match="scratch"):
        run(0, 0, 0, None, 0, 1)
