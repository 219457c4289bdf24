"""ops/autograd.py entry points against float64 PyTorch autograd, and their fallback wiring.

Found by mutation testing (issue 20): every forward / grad_input / grad_weight implementation is
called directly (no dispatcher in between) on random strided, dilated, padded, grouped and
channel-multiplier convolutions and compared with ``torch.autograd.grad`` of ``F.conv*d`` in
float64; ``record_impls`` checks which implementation really ran, including the fallbacks when a
compiled implementation cannot serve a call (and the error when it was forced).
"""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from largekernel.ops import ForcedImplementationError, autograd, force_impl, native, record_impls, triton_dispatch
from largekernel.ops.autograd import EngineConvFunction, compute_grad_input, compute_grad_weight, run_forward
from largekernel.ops.dispatch import Plan
from largekernel.ops.validation import normalize_conv_args

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
HAVE_KERNELS = native.kernels_module() is not None


def _pad_arg(pairs):
    return [p for pair in reversed(pairs) for p in pair]


def _dw(nd=2, c=3, k=3, n=7, dtype=torch.float64, mult=1):
    gen = torch.Generator().manual_seed(nd * 10 + k)
    x = torch.randn((2, c) + (n,) * nd, dtype=dtype, generator=gen)
    w = torch.randn((c * mult, 1) + (k,) * nd, dtype=dtype, generator=gen)
    return x, w


def test_unknown_implementations_are_errors():
    x, w = _dw()
    with pytest.raises(ValueError, match=r"^unknown forward implementation 'cuda'$"):
        run_forward("cuda", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    with pytest.raises(ValueError, match=r"^unknown grad_weight implementation 'cuda'$"):
        compute_grad_weight("cuda", torch.ones(2, 3, 7, 7, dtype=torch.float64), x, w, (1, 1), (1, 1), (1, 1), 3)


def test_missing_compiled_kernels_fall_back_or_fail_when_forced(monkeypatch):
    monkeypatch.setattr(native, "kernels_module", lambda: None)
    x, w = _dw()
    ref = F.conv2d(x, w, None, 1, 1, 1, 3)
    gy = torch.ones_like(ref)
    with record_impls() as steps:
        y = run_forward("kernels", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
        gw = compute_grad_weight("kernels", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(gw, native.aten_grad_weight(gy, x, w, (1, 1), (1, 1), (1, 1), 3))
    assert [(s.stage, s.impl) for s in steps] == [("forward", "native_cl"), ("grad_weight", "fft")]
    with force_impl(forward="kernels"), pytest.raises(
        ForcedImplementationError,
        match=r"^force_impl\(forward='kernels'\) cannot serve this convolution: the compiled kernels are not available$",
    ):
        run_forward("kernels", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    with force_impl(grad_weight="kernels"), pytest.raises(ForcedImplementationError, match="not available"):
        compute_grad_weight("kernels", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    # forcing another stage does not make this one strict
    with force_impl(forward="kernels"):
        compute_grad_weight("kernels", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    # a module without the entry point counts as unavailable
    monkeypatch.setattr(native, "kernels_module", lambda: object())
    with record_impls() as steps:
        torch.testing.assert_close(run_forward("kernels", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3), ref)
    assert [s.impl for s in steps] == ["native_cl"]


@pytest.mark.skipif(not HAVE_KERNELS, reason="needs the compiled CPU kernels (a C compiler)")
def test_channel_multiplier_is_not_depthwise_for_the_compiled_kernels():
    x, w = _dw(mult=2)
    with force_impl(forward="kernels"), pytest.raises(
        ForcedImplementationError,
        match=r"^force_impl\(forward='kernels'\) cannot serve this convolution: weight \(6, 1, 3, 3\) with groups=3 "
              r"is not depthwise$",
    ):
        run_forward("kernels", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    gy = torch.ones(2, 6, 7, 7, dtype=torch.float64)
    with force_impl(grad_weight="kernels"), pytest.raises(ForcedImplementationError, match="is not depthwise"):
        compute_grad_weight("kernels", gy, x, w, (1, 1), (1, 1), (1, 1), 3)


@pytest.mark.skipif(not HAVE_KERNELS, reason="needs the compiled CPU kernels (a C compiler)")
def test_failing_compiled_kernel_warns_once_and_falls_back(monkeypatch, caplog):
    mod = native.kernels_module()

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(mod, "depthwise_forward", boom)
    monkeypatch.setattr(mod, "depthwise_grad_weight", boom)
    monkeypatch.setattr(autograd, "_WARNED", set())
    x, w = _dw()
    b = torch.randn(3, dtype=torch.float64)
    gy = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="largekernel.ops.autograd"), record_impls() as steps:
        for _ in range(2):
            y = run_forward("kernels", x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
            gw = compute_grad_weight("kernels", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    torch.testing.assert_close(y, F.conv2d(x, w, b, 1, 1, 1, 3))
    torch.testing.assert_close(gw, native.aten_grad_weight(gy, x, w, (1, 1), (1, 1), (1, 1), 3))
    assert [s.impl for s in steps] == ["native_cl", "fft"] * 2
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "compiled forward kernels failed (RuntimeError: boom); using the PyTorch fallback",
        "compiled grad_weight kernels failed (RuntimeError: boom); using the PyTorch fallback",
    ]
    with force_impl(forward="kernels"), pytest.raises(ForcedImplementationError, match=r"RuntimeError: boom$") as info:
        run_forward("kernels", x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 3)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.skipif(not HAVE_KERNELS, reason="needs the compiled CPU kernels (a C compiler)")
def test_compiled_forward_adds_the_bias_per_channel():
    x, w = _dw(nd=1, k=5, n=9)
    b = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    with record_impls() as steps:
        y = run_forward("kernels", x, w, b, (2,), ((2, 2),), (1,), 3)
    assert [s.impl for s in steps] == ["kernels"]
    torch.testing.assert_close(y, F.conv1d(x, w, b, 2, 2, 1, 3))


def _fake_triton(monkeypatch, fail=False):
    calls = []

    def forward(x, w, b, stride, padding, dilation):
        calls.append(("forward", tuple(padding)))
        if fail:
            raise RuntimeError("no GPU")
        return CONV[w.dim() - 2](x, w, b, tuple(stride), tuple(padding), tuple(dilation), x.shape[1])

    def grad_input(gy, x, w, stride, padding, dilation):
        calls.append(("grad_input", tuple(padding)))
        if fail:
            raise RuntimeError("no GPU")
        return native.aten_grad_input(gy, x, w, stride, padding, dilation, x.shape[1])

    def grad_weight(gy, x, w, stride, padding, dilation, deterministic=False):
        calls.append(("grad_weight", deterministic))
        if fail:
            raise RuntimeError("no GPU")
        return native.aten_grad_weight(gy, x, w, stride, padding, dilation, x.shape[1])

    monkeypatch.setattr(triton_dispatch, "triton_forward", forward)
    monkeypatch.setattr(triton_dispatch, "triton_grad_input", grad_input)
    monkeypatch.setattr(triton_dispatch, "triton_grad_weight", grad_weight)
    return calls


@pytest.mark.parametrize("fail", [False, True])
def test_triton_entry_points_and_their_fallbacks(monkeypatch, caplog, fail):
    calls = _fake_triton(monkeypatch, fail)
    monkeypatch.setattr(autograd, "_WARNED", set())
    x, w = _dw(k=4, n=6)
    b = torch.randn(3, dtype=torch.float64)
    ref_y = F.conv2d(F.pad(x, [1, 2, 1, 2]), w, b, 1, 0, 1, 3)
    with caplog.at_level(logging.WARNING, logger="largekernel.ops.autograd"), record_impls() as steps:
        y = run_forward("triton", x, w, b, (1, 1), ((1, 2), (1, 2)), (1, 1), 3)
        gy = torch.randn(2, 3, 5, 5, dtype=torch.float64)
        gi = compute_grad_input("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
        gw = compute_grad_weight("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    torch.testing.assert_close(y, ref_y)
    torch.testing.assert_close(gi, native.aten_grad_input(gy, x, w, (1, 1), (1, 1), (1, 1), 3))
    torch.testing.assert_close(gw, native.aten_grad_weight(gy, x, w, (1, 1), (1, 1), (1, 1), 3))
    # the asymmetric pairs were pre-padded: Triton sees symmetric zero padding
    assert calls == [("forward", (0, 0)), ("grad_input", (1, 1)), ("grad_weight", False)]
    expected = ["native_cl", "aten", "aten"] if fail else ["triton", "triton", "triton"]
    assert [(s.stage, s.impl, s.nd) for s in steps] == [
        (stage, impl, 2) for stage, impl in zip(("forward", "grad_input", "grad_weight"), expected)
    ]
    expected_warnings = [
        f"compiled {stage} triton failed (RuntimeError: no GPU); using the PyTorch fallback"
        for stage in ("forward", "grad_input", "grad_weight")
    ]
    assert [r.getMessage() for r in caplog.records] == (expected_warnings if fail else [])
    if fail:
        for stage, call in (
            ("forward", lambda: run_forward("triton", x, w, b, (1, 1), ((1, 2), (1, 2)), (1, 1), 3)),
            ("grad_input", lambda: compute_grad_input("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 3)),
            ("grad_weight", lambda: compute_grad_weight("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 3)),
        ):
            with force_impl(**{stage: "triton"}), pytest.raises(ForcedImplementationError) as info:
                call()
            assert str(info.value) == (
                f"force_impl({stage}='triton') cannot serve this convolution: RuntimeError: no GPU"
            )
            assert isinstance(info.value.__cause__, RuntimeError)


def test_triton_grad_weight_is_told_about_deterministic_mode(monkeypatch):
    calls = _fake_triton(monkeypatch)
    x, w = _dw()
    gy = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        compute_grad_weight("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 3)
    finally:
        torch.use_deterministic_algorithms(old)
    assert calls == [("grad_weight", True)]


def test_triton_refuses_non_depthwise_weights(monkeypatch):
    calls = _fake_triton(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, generator=gen)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen)
    gy = torch.randn(1, 2, 6, 6, dtype=torch.float64, generator=gen)
    with record_impls() as steps:
        y = run_forward("triton", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 2)
        gi = compute_grad_input("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 2)
        gw = compute_grad_weight("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 2)
    assert not calls and [s.impl for s in steps] == ["native_cl", "aten", "aten"]
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1, 1, 2))
    torch.testing.assert_close(gi, native.aten_grad_input(gy, x, w, (1, 1), (1, 1), (1, 1), 2))
    torch.testing.assert_close(gw, native.aten_grad_weight(gy, x, w, (1, 1), (1, 1), (1, 1), 2))
    for stage, call in (
        ("forward", lambda: run_forward("triton", x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 2)),
        ("grad_input", lambda: compute_grad_input("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 2)),
        ("grad_weight", lambda: compute_grad_weight("triton", gy, x, w, (1, 1), (1, 1), (1, 1), 2)),
    ):
        with force_impl(**{stage: "triton"}), pytest.raises(ForcedImplementationError) as info:
            call()
        assert str(info.value) == (
            f"force_impl({stage}='triton') cannot serve this convolution: weight (2, 2, 3, 3) with groups=2 "
            "is not depthwise"
        )


# ------------------------------------------------------------------------------ EngineConvFunction
def _engine(x, w, b, plan, out_format=torch.contiguous_format, **kw):
    args = normalize_conv_args(x, w, b, kw.get("stride", 1), kw.get("padding", 1), kw.get("dilation", 1), x.shape[1])
    return EngineConvFunction.apply(x, w, b, args, plan, out_format)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_computed_in_float32_and_returned_in_their_dtypes(dtype):
    x, w = _dw(dtype=torch.float32, k=5, n=9)
    b = torch.randn(3)
    xh, wh = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    bh = b.to(dtype).requires_grad_()
    plan = Plan("fft", "fft", "fft", "test", torch.float32)
    y = _engine(xh, wh, bh, plan, padding=2)
    assert y.dtype == dtype
    gy = torch.randn(y.shape).to(dtype)
    gx, gw, gb = torch.autograd.grad(y, (xh, wh, bh), gy)
    assert (gx.dtype, gw.dtype, gb.dtype) == (dtype, dtype, dtype)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (xh, wh, bh))
    yr = F.conv2d(xr, wr, br, 1, 2, 1, 3)
    rx, rw, rb = torch.autograd.grad(yr, (xr, wr, br), gy.double())
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    for got, ref in ((y, yr), (gx, rx), (gw, rw), (gb, rb)):
        assert ((got.double() - ref).norm() / ref.norm()) < tol


def test_float16_forward_runs_in_the_plans_float32():
    """fp16 on CPU is computed in float32 and rounded once: bit-identical to PyTorch's float32
    convolution rounded to fp16 (PyTorch's own fp16 CPU convolution differs in ~0.1 % of outputs)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 32, 32, generator=gen).half()
    w = torch.randn(8, 1, 13, 13, generator=gen).half()
    b = torch.randn(8, generator=gen).half()
    y = _engine(x, w, b, Plan("native", "native", "aten", "test", torch.float32), padding=6)
    assert y.dtype == torch.float16
    expected = F.conv2d(x.float(), w.float(), b.float(), 1, 6, 1, 8).half()
    assert torch.equal(y, expected)


def test_only_the_requested_gradients_are_computed():
    x, w = _dw()
    b = torch.randn(3, dtype=torch.float64)
    plan = Plan("native", "native", "aten", "test", torch.float64)
    for needs in ((True, False, False), (False, True, False), (False, False, True), (True, True, True)):
        xs, ws, bs = (t.clone().requires_grad_(r) for t, r in zip((x, w, b), needs))
        with record_impls() as steps:
            y = _engine(xs, ws, bs, plan)
            y.backward(torch.ones_like(y))
        stages = [s.stage for s in steps if s.stage != "forward"]
        assert stages == [s for s, r in zip(("grad_input", "grad_weight"), needs) if r]
        xr, wr, br = (t.clone().requires_grad_(r) for t, r in zip((x, w, b), needs))
        F.conv2d(xr, wr, br, 1, 1, 1, 3).backward(torch.ones_like(y))
        for got, ref in ((xs, xr), (ws, wr), (bs, br)):
            if ref.grad is None:
                assert got.grad is None
            else:
                torch.testing.assert_close(got.grad, ref.grad)


def test_channels_last_output_format_and_contiguous_weight_gradient():
    x, w = _dw(k=5, n=9)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = w.requires_grad_()
    plan = Plan("native_cl", "native_cl", "aten_cl", "test", torch.float64)
    y = _engine(x, w, None, plan, torch.channels_last, padding=2)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    gy = torch.randn(y.shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    assert gx.is_contiguous(memory_format=torch.channels_last) and not gx.is_contiguous()
    assert gw.is_contiguous()  # the weight is contiguous: so is its gradient (DDP buckets)
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    rx, rw = torch.autograd.grad(F.conv2d(xr, wr, None, 1, 2, 1, 3), (xr, wr), gy)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    # a channels-last weight keeps whatever layout the gradient came in (no copy forced)
    wcl = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = _engine(x, wcl, None, plan, torch.channels_last, padding=2)
    (gwcl,) = torch.autograd.grad(y, (wcl,), gy)
    torch.testing.assert_close(gwcl, rw)


@pytest.mark.parametrize("weight_channels_last", [False, True])
def test_weight_gradient_has_the_weights_strides(weight_channels_last):
    """PyTorch's channels-last weight gradient comes back channels-last; a contiguous weight gets a
    contiguous gradient (DDP's buckets and fused optimisers expect the parameter's strides)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen)
    if weight_channels_last:
        w = w.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w.requires_grad_()
    args = normalize_conv_args(x, w, None, 1, 1, 1, 1)
    y = EngineConvFunction.apply(x, w, None, args, Plan("native_cl", "native_cl", "aten_cl", "t", torch.float64),
                                 torch.channels_last)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    (gw,) = torch.autograd.grad(y, (w,), gy)
    assert gw.stride() == w.stride()
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    torch.testing.assert_close(gw, torch.autograd.grad(F.conv2d(xr, wr, None, 1, 1), (wr,), gy)[0])


def test_float16_backward_runs_in_the_plans_float32():
    """Gradients of fp16 tensors are computed in float32 and rounded once: bit-identical to the
    float32 maths rounded to fp16 (grad_input: the flipped-kernel convolution; grad_weight:
    PyTorch's float32 autograd); fp16 arithmetic differs in ~0.1 % of the values."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 24, 24, generator=gen).half().requires_grad_()
    w = torch.randn(8, 1, 13, 13, generator=gen).half().requires_grad_()
    y = _engine(x, w, None, Plan("native", "native", "aten", "test", torch.float32), padding=6)
    gy = torch.randn(y.shape, generator=gen).half()
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    assert gx.dtype == gw.dtype == torch.float16
    # stride 1, "same" padding 6 of a 13-tap kernel: grad_input = conv(gy, flipped kernel, padding 13 - 1 - 6)
    assert torch.equal(gx, F.conv2d(gy.float(), w.detach().float().flip(-1, -2), None, 1, 6, 1, 8).half())
    xr, wr = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    (rw,) = torch.autograd.grad(F.conv2d(xr, wr, None, 1, 6, 1, 8), (wr,), gy.float())
    assert torch.equal(gw, rw.half())


def test_create_graph_backward_stays_on_differentiable_pytorch_ops():
    x, w = _dw(k=5, n=9)
    x.requires_grad_()
    w.requires_grad_()
    plan = Plan("fft", "fft", "fft", "test", torch.float64)
    with record_impls() as steps:
        y = _engine(x, w, None, plan, padding=2)
        (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        (gw2,) = torch.autograd.grad(gx.pow(2).sum(), w)
    assert [(s.stage, s.impl) for s in steps][:3] == [("forward", "fft"), ("grad_input", "aten"), ("grad_weight", "aten")]
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    (gxr,) = torch.autograd.grad(F.conv2d(xr, wr, None, 1, 2, 1, 3).pow(2).sum(), xr, create_graph=True)
    (gw2r,) = torch.autograd.grad(gxr.pow(2).sum(), wr)
    torch.testing.assert_close(gw2, gw2r)
    # without create_graph the planned implementations run
    with record_impls() as steps:
        torch.autograd.grad(_engine(x, w, None, plan, padding=2).sum(), (x, w))
    assert [s.impl for s in steps] == ["fft", "fft", "fft"]


# ------------------------------------------------------------------------------ every implementation
@st.composite
def problems(draw):
    nd = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["depthwise", "depthwise", "multiplier", "grouped", "dense"]))
    groups, c_in, c_out = {
        "depthwise": (c, c, c), "multiplier": (c, c, 2 * c), "grouped": (c, 2 * c, c), "dense": (1, c, 2),
    }[kind]
    ks = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    spatial = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
        for k, d, p in zip(ks, dilation, padding)
    )
    # (left, right) pairs for run_forward: any split, negative values crop
    pairs = tuple((draw(st.integers(-1, 3)), draw(st.integers(-1, 3))) for _ in range(nd))
    seed = draw(st.integers(0, 2**16))
    return nd, groups, c_in, c_out, ks, stride, dilation, padding, spatial, pairs, seed


def _ran(steps, stage):
    return [s.impl for s in steps if s.stage == stage]


@settings(max_examples=30, deadline=None)
@given(problem=problems())
def test_every_implementation_matches_float64_autograd(problem):
    nd, groups, c_in, c_out, ks, stride, dilation, padding, spatial, pairs, seed = problem
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, c_in) + spatial, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn((c_out, c_in // groups) + ks, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=gen)
    y = CONV[nd](x, w, b, stride, padding, dilation, groups)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    x, w = x.detach(), w.detach()
    depthwise = c_in == c_out == groups
    sym = tuple((p, p) for p in padding)
    for impl in ("native", "native_cl", "fft", "kernels"):
        with record_impls() as steps:
            got = run_forward(impl, x, w, b, stride, sym, dilation, groups)
        torch.testing.assert_close(got, y.detach(), rtol=1e-9, atol=1e-9)
        assert all(s.nd == nd for s in steps)
        ran = _ran(steps, "forward")
        if impl == "kernels" and HAVE_KERNELS and depthwise:
            assert ran == ["kernels"]
        elif impl in ("kernels", "native_cl"):
            assert ran in (["native_cl"], ["native"])  # native_cl unless channels-last is unsafe
        else:
            assert ran == [impl]
    # asymmetric / cropping (left, right) pairs
    ok = all(n + lo + hi >= d * (k - 1) + 1 for n, lo, hi, k, d in zip(spatial, *zip(*pairs), ks, dilation))
    if ok:
        ref = CONV[nd](F.pad(x, _pad_arg(pairs)), w, b, stride, 0, dilation, groups)
        for impl in ("native", "fft", "kernels"):
            torch.testing.assert_close(run_forward(impl, x, w, b, stride, pairs, dilation, groups), ref,
                                       rtol=1e-9, atol=1e-9)
    for impl in ("native", "native_cl", "fft", "kernels", "aten"):
        with record_impls() as steps:
            got = compute_grad_input(impl, gy, x, w, stride, padding, dilation, groups)
        torch.testing.assert_close(got, gx, rtol=1e-9, atol=1e-9)
        assert not _ran(steps, "forward") and len(_ran(steps, "grad_input")) == 1
        if impl in ("fft", "aten", "native"):
            assert _ran(steps, "grad_input") == [impl]
    for impl in ("kernels", "fft", "aten", "aten_cl"):
        with record_impls() as steps:
            got = compute_grad_weight(impl, gy, x, w, stride, padding, dilation, groups)
        torch.testing.assert_close(got, gw, rtol=1e-9, atol=1e-9)
        ran = _ran(steps, "grad_weight")
        if impl == "kernels":
            assert ran == (["kernels"] if HAVE_KERNELS and depthwise else ["fft"])
        elif impl == "aten_cl":
            assert ran in (["aten_cl"], ["aten"])
        else:
            assert ran == [impl]
