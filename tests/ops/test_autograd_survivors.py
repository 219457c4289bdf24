"""ops/autograd.py: the wiring that the mutation run of issue 20 showed to be untested.

Each test names the behaviour it pins; the values are always compared with float64 PyTorch
(``F.conv*d`` and its autograd), and ``record_impls`` checks which implementation really ran:

* the channels-last forward re-checks PyTorch's channels-last *weight gradient* when autograd
  will differentiate it (``run_forward`` called with grad enabled, as ``conv()`` does for plans
  that use PyTorch's autograd), and only then;
* a bias with outputs that read only zero padding keeps the forward in NCHW;
* ``native_cl`` really runs channels-last (its outputs keep channels-last strides), and so does
  the ``aten_cl`` weight gradient;
* a failed Triton forward off the CPU falls back to the NCHW forward;
* compiled-kernel modules without the forward entry point, or whose weight gradient fails, give
  the documented errors and warnings, and the weight-gradient stages record their spatial rank.
"""

from __future__ import annotations

import logging
import types

import pytest
import torch
from torch.nn import functional as F

from largekernel.ops import (
    ForcedImplementationError,
    autograd,
    force_impl,
    native,
    record_impls,
)
from largekernel.ops.autograd import compute_grad_weight, run_forward

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _rand(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _steps(steps):
    return [(s.stage, s.impl, s.nd) for s in steps]


def _reference_grads(x, w, gy, stride, padding, dilation, groups):
    """float64 autograd of PyTorch's own convolution."""
    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    y = CONV[w.dim() - 2](xr, wr, None, stride, padding, dilation, groups)
    return torch.autograd.grad(y, (xr, wr), gy.double())


# ------------------------------------------------------------------------------ run_forward
def test_channels_last_forward_is_kept_when_autograd_differentiates_a_safe_conv():
    """2-D depthwise: PyTorch's channels-last weight gradient is trustworthy, so ``native_cl``
    stays channels-last under autograd (x or the weight requiring a gradient)."""
    x, w = _rand(2, 3, 9, 9), _rand(3, 1, 5, 5, seed=1)
    gy = _rand(2, 3, 9, 9, seed=2)
    for needs_x, needs_w in ((True, False), (False, True), (True, True)):
        xs, ws = x.clone().requires_grad_(needs_x), w.clone().requires_grad_(needs_w)
        with record_impls() as steps:
            y = run_forward("native_cl", xs, ws, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 3)
        assert _steps(steps) == [("forward", "native_cl", 2)]
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        inputs = tuple(t for t, r in ((xs, needs_x), (ws, needs_w)) if r)
        got = torch.autograd.grad(y, inputs, gy)
        rx, rw = _reference_grads(x, w, gy, 1, 2, 1, 3)
        refs = tuple(r for r, n in ((rx, needs_x), (rw, needs_w)) if n)
        for g, r in zip(got, refs):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_nchw_forward_stays_nchw_under_autograd():
    """``native`` is PyTorch's NCHW convolution whether or not autograd will differentiate it."""
    x, w = _rand(2, 3, 9, 9).requires_grad_(), _rand(3, 1, 5, 5, seed=1)
    for weight_grad in (False, True):
        ws = w.clone().requires_grad_(weight_grad)
        with record_impls() as steps:
            y = run_forward("native", x, ws, None, (1, 1), ((2, 2), (2, 2)), (1, 1), 3)
        assert _steps(steps) == [("forward", "native", 2)]
        assert y.is_contiguous()
        torch.testing.assert_close(y, F.conv2d(x, ws, None, 1, 2, 1, 3))


def test_grouped_strided_3d_forward_under_autograd_leaves_channels_last():
    """PyTorch's channels-last 3-D grouped weight gradient with stride > 1 is wrong in float32, so
    a ``native_cl`` forward that autograd will differentiate runs NCHW instead; also when only
    the weight (or only x) needs a gradient, and not when no gradient is recorded."""
    x = _rand(2, 4, 6, 6, 6, dtype=torch.float32)
    w = _rand(4, 2, 3, 3, 3, dtype=torch.float32, seed=1)
    args = ((2, 2, 2), ((1, 1),) * 3, (1, 1, 1), 2)
    gy = _rand(2, 4, 3, 3, 3, dtype=torch.float32, seed=2)
    rx, rw = _reference_grads(x, w, gy, 2, 1, 1, 2)
    for needs_x, needs_w in ((False, True), (True, False), (True, True)):
        xs, ws = x.clone().requires_grad_(needs_x), w.clone().requires_grad_(needs_w)
        with record_impls() as steps:
            y = run_forward("native_cl", xs, ws, None, *args)
        # checked before any backward: the channels-last weight gradient could corrupt the heap
        assert _steps(steps) == [("forward", "native", 3)]
        inputs = tuple(t for t, r in ((xs, needs_x), (ws, needs_w)) if r)
        refs = tuple(r for r, n in ((rx, needs_x), (rw, needs_w)) if n)
        for g, r in zip(torch.autograd.grad(y, inputs, gy), refs):
            torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4)
    # the forward alone is safe channels-last: without a recorded graph it stays channels-last
    with torch.no_grad(), record_impls() as steps:
        y = run_forward("native_cl", x.clone().requires_grad_(), w.clone().requires_grad_(), None, *args)
    assert _steps(steps) == [("forward", "native_cl", 3)]
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y, F.conv3d(x, w, None, 2, 1, 1, 2), rtol=1e-5, atol=1e-5)


def test_bias_with_outputs_reading_only_padding_keeps_the_forward_nchw():
    """oneDNN's channels-last forward with a bias is not trusted when some output reads only zero
    padding (a 1x1 kernel, padding 1: the first output row is all padding); without the bias, or
    when every output reads the input, the forward is channels-last."""
    x, w, b = _rand(1, 2, 5, 5), _rand(2, 1, 1, 1, seed=1), _rand(2, seed=2)
    cases = (
        (b, (2, 2), ((1, 1), (1, 1)), "native"),  # outputs at the padding rows/columns: bias only
        (b, (2, 2), ((0, 0), (1, 1)), "native"),  # only the first column reads padding only
        (None, (2, 2), ((1, 1), (1, 1)), "native_cl"),
        (b, (1, 1), ((0, 0), (0, 0)), "native_cl"),
    )
    for bias, stride, pads, expected in cases:
        with record_impls() as steps:
            y = run_forward("native_cl", x, w, bias, stride, pads, (1, 1), 2)
        assert _steps(steps) == [("forward", expected, 2)]
        ref = F.conv2d(x, w, bias, stride, tuple(lo for lo, _ in pads), 1, 2)
        torch.testing.assert_close(y, ref)
        assert y.is_contiguous() == (expected == "native")  # native_cl: channels-last strides
    # symmetric pairs are passed on as padding; asymmetric ones are pre-padded explicitly (real
    # zeros in the input, no padding for oneDNN), after which every output reads the input
    with record_impls() as steps:
        y = run_forward("native_cl", x, w, b, (2, 2), ((1, 0), (1, 0)), (1, 1), 2)
    assert _steps(steps) == [("forward", "native_cl", 2)]
    torch.testing.assert_close(y, F.conv2d(F.pad(x, [1, 0, 1, 0]), w, b, 2, 0, 1, 2))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_native_cl_forward_runs_channels_last(nd):
    """``native_cl`` hands PyTorch channels-last tensors: 2-D/3-D outputs keep channels-last strides
    (1-D ones run as 2-D and come back contiguous); ``native`` keeps NCHW."""
    # float32: PyTorch's float64 3-D convolution ignores the channels-last layout
    x = _rand(2, 3, *(7,) * nd, dtype=torch.float32)
    w = _rand(6, 1, *(3,) * nd, dtype=torch.float32, seed=1)
    ref = CONV[nd](x.double(), w.double(), None, 1, 1, 1, 3)
    pads = ((1, 1),) * nd
    y_cl = run_forward("native_cl", x, w, None, (1,) * nd, pads, (1,) * nd, 3)
    y = run_forward("native", x, w, None, (1,) * nd, pads, (1,) * nd, 3)
    torch.testing.assert_close(y_cl.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous()
    if nd == 1:
        assert y_cl.is_contiguous()
    else:
        fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
        assert y_cl.is_contiguous(memory_format=fmt) and not y_cl.is_contiguous()


def test_triton_fallback_off_the_cpu_is_the_nchw_forward():
    """When Triton cannot serve a call, CPU tensors go to the channels-last forward and other
    devices to PyTorch's NCHW one (channels-last is a oneDNN choice). ``meta`` tensors stand in
    for a non-CPU device: shapes and the dispatch decision without any computation."""
    for device, expected in (("meta", "native"), ("cpu", "native_cl")):
        x = _rand(2, 4, 8, 8).to(device)
        w = _rand(2, 2, 3, 3, seed=1).to(device)  # two input channels per group: not depthwise
        with record_impls() as steps:
            y = run_forward("triton", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 2)
        assert _steps(steps) == [("forward", expected, 2)]
        assert y.device.type == device and tuple(y.shape) == (2, 2, 8, 8)
        if device == "cpu":
            torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1, 1, 2))


def test_compiled_module_without_a_forward_entry_point_is_unavailable(monkeypatch, caplog):
    """A compiled-kernel build that only has the weight gradient is "not available" for the
    forward: a silent fallback (no warning), or the documented error when it was forced."""
    monkeypatch.setattr(native, "kernels_module", lambda: types.SimpleNamespace(depthwise_grad_weight=None))
    monkeypatch.setattr(autograd, "_WARNED", set())
    x, w, b = _rand(2, 3, 7, 7), _rand(3, 1, 3, 3, seed=1), _rand(3, seed=2)
    with caplog.at_level(logging.DEBUG, logger="largekernel.ops.autograd"), record_impls() as steps:
        y = run_forward("kernels", x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    assert _steps(steps) == [("forward", "native_cl", 2)]
    assert caplog.records == []
    torch.testing.assert_close(y, F.conv2d(x, w, b, 1, 1, 1, 3))
    with force_impl(forward="kernels"), pytest.raises(ForcedImplementationError) as info:
        run_forward("kernels", x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    assert str(info.value) == (
        "force_impl(forward='kernels') cannot serve this convolution: the compiled kernels are not available"
    )
    assert info.value.__cause__ is None


# ------------------------------------------------------------------------------ compute_grad_weight
def _dw_problem(nd, seed=0):
    x = _rand(2, 3, *(6,) * nd, seed=seed)
    w = _rand(3, 1, *(3,) * nd, seed=seed + 1)
    stride, padding, dilation = (2,) * nd, (1,) * nd, (1,) * nd
    gy = _rand(*CONV[nd](x, w, None, stride, padding, dilation, 3).shape, seed=seed + 2)
    return x, w, gy, stride, padding, dilation


def test_compiled_grad_weight_not_available_message(monkeypatch):
    monkeypatch.setattr(native, "kernels_module", lambda: None)
    x, w, gy, stride, padding, dilation = _dw_problem(2)
    with force_impl(grad_weight="kernels"), pytest.raises(ForcedImplementationError) as info:
        compute_grad_weight("kernels", gy, x, w, stride, padding, dilation, 3)
    assert str(info.value) == (
        "force_impl(grad_weight='kernels') cannot serve this convolution: the compiled kernels are not available"
    )


def test_failing_compiled_grad_weight_names_the_exception(monkeypatch, caplog):
    def bad_shape(*args):
        raise ValueError("unsupported extent")

    monkeypatch.setattr(native, "kernels_module", lambda: types.SimpleNamespace(depthwise_grad_weight=bad_shape))
    monkeypatch.setattr(autograd, "_WARNED", set())
    x, w, gy, stride, padding, dilation = _dw_problem(2)
    with caplog.at_level(logging.WARNING, logger="largekernel.ops.autograd"), record_impls() as steps:
        gw = compute_grad_weight("kernels", gy, x, w, stride, padding, dilation, 3)
    assert _steps(steps) == [("grad_weight", "fft", 2)]
    torch.testing.assert_close(gw, _reference_grads(x, w, gy, stride, padding, dilation, 3)[1])
    assert [r.getMessage() for r in caplog.records] == [
        "compiled grad_weight kernels failed (ValueError: unsupported extent); using the PyTorch fallback"
    ]
    with force_impl(grad_weight="kernels"), pytest.raises(ForcedImplementationError) as info:
        compute_grad_weight("kernels", gy, x, w, stride, padding, dilation, 3)
    assert str(info.value) == (
        "force_impl(grad_weight='kernels') cannot serve this convolution: ValueError: unsupported extent"
    )
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_grad_weight_stages_record_their_spatial_rank(monkeypatch, nd):
    """``record_impls`` reports the spatial rank for every weight-gradient implementation. The
    compiled kernel is stood in for by PyTorch's float64 autograd (its values are tested in
    tests/ops/test_cpu_kernels.py); the call it receives is checked too."""
    calls = []

    def depthwise_grad_weight(x, gy, kernel, stride, padding, dilation):
        calls.append((kernel, stride, padding, dilation))
        return _reference_grads(x, torch.zeros((x.shape[1], 1) + kernel, dtype=x.dtype), gy,
                                stride, padding, dilation, x.shape[1])[1]

    monkeypatch.setattr(native, "kernels_module",
                        lambda: types.SimpleNamespace(depthwise_grad_weight=depthwise_grad_weight))
    x, w, gy, stride, padding, dilation = _dw_problem(nd, seed=nd)
    ref = _reference_grads(x, w, gy, stride, padding, dilation, 3)[1]
    for impl in ("kernels", "fft", "aten", "aten_cl"):
        with record_impls() as steps:
            gw = compute_grad_weight(impl, gy, x, w, stride, padding, dilation, 3)
        # 3-D grouped with stride 2: PyTorch's channels-last weight gradient is not used
        expected = "aten" if impl == "aten_cl" and nd == 3 else impl
        assert _steps(steps) == [("grad_weight", expected, nd)]
        torch.testing.assert_close(gw, ref, rtol=1e-10, atol=1e-10)
    assert calls == [((3,) * nd, stride, padding, dilation)]


def test_aten_cl_grad_weight_runs_channels_last():
    """``aten_cl`` hands ``convolution_backward`` channels-last tensors (its weight gradient comes
    back channels-last), except for the 3-D grouped strided case, which runs NCHW."""
    x, w = _rand(2, 2, 9, 9), _rand(4, 2, 3, 3, seed=1)
    gy = _rand(2, 4, 9, 9, seed=2)
    ref = _reference_grads(x, w, gy, 1, 1, 1, 1)[1]
    for impl in ("aten_cl", "aten"):
        with record_impls() as steps:
            gw = compute_grad_weight(impl, gy, x, w, (1, 1), (1, 1), (1, 1), 1)
        assert _steps(steps) == [("grad_weight", impl, 2)]
        torch.testing.assert_close(gw, ref, rtol=1e-10, atol=1e-10)
        channels_last = gw.is_contiguous(memory_format=torch.channels_last) and not gw.is_contiguous()
        assert channels_last == (impl == "aten_cl")
    x3, w3 = _rand(2, 4, 6, 6, 6, dtype=torch.float32), _rand(4, 2, 3, 3, 3, dtype=torch.float32, seed=1)
    gy3 = _rand(2, 4, 3, 3, 3, dtype=torch.float32, seed=2)
    with record_impls() as steps:
        gw3 = compute_grad_weight("aten_cl", gy3, x3, w3, (2, 2, 2), (1, 1, 1), (1, 1, 1), 2)
    assert _steps(steps) == [("grad_weight", "aten", 3)]
    assert gw3.is_contiguous()
    torch.testing.assert_close(gw3.double(), _reference_grads(x3, w3, gy3, 2, 1, 1, 2)[1], rtol=1e-4, atol=1e-4)
