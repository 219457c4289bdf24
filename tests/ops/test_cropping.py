"""Dropping kernel taps that only read padding: exact against float64 F.conv, values and gradients."""

import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from largekernel.ops import conv, force_impl
from largekernel.ops.cropping import crop_unreachable_taps, unreachable_taps
from largekernel.ops.validation import normalize_conv_args

F_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _reads_input(length, kernel, stride, lo, hi, dilation, tap):
    """Brute force: does ``tap`` read a real input position for some output?"""
    out = (length + lo + hi - dilation * (kernel - 1) - 1) // stride + 1
    return any(0 <= o * stride + tap * dilation - lo < length for o in range(out))


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 12), kernel=st.integers(1, 15), stride=st.integers(1, 3),
    lo=st.integers(0, 14), hi=st.integers(0, 14), dilation=st.integers(1, 4),
)
def test_dropped_taps_never_read_the_input(length, kernel, stride, lo, hi, dilation):
    if length + lo + hi < dilation * (kernel - 1) + 1:
        return  # not a valid convolution
    lead, trail = unreachable_taps(length, kernel, stride, lo, hi, dilation)
    assert 0 <= lead and 0 <= trail and lead + trail < kernel
    assert lead * dilation <= lo and trail * dilation <= hi
    for tap in [*range(lead), *range(kernel - trail, kernel)]:
        assert not _reads_input(length, kernel, stride, lo, hi, dilation, tap)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 12), kernel=st.integers(1, 15), stride=st.integers(1, 3),
    lo=st.integers(0, 14), hi=st.integers(0, 14), dilation=st.integers(1, 4),
)
def test_every_droppable_tap_is_dropped(length, kernel, stride, lo, hi, dilation):
    # maximal, not merely safe: drop leading taps while every output reads them left of the input
    # (within the left padding, keeping one tap), then trailing taps read right of it by every
    # output. (A strided tap that skips over the input is kept: only ends that read padding go.)
    if length + lo + hi < dilation * (kernel - 1) + 1:
        return  # not a valid convolution
    out = (length + lo + hi - dilation * (kernel - 1) - 1) // stride + 1
    positions = [[o * stride + t * dilation - lo for o in range(out)] for t in range(kernel)]
    lead = 0
    while lead + 1 <= kernel - 1 and (lead + 1) * dilation <= lo and all(p < 0 for p in positions[lead]):
        lead += 1
    trail = 0
    while (trail + 1 <= kernel - 1 - lead and (trail + 1) * dilation <= hi
           and all(p >= length for p in positions[kernel - 1 - trail])):
        trail += 1
    assert unreachable_taps(length, kernel, stride, lo, hi, dilation) == (lead, trail)


@pytest.mark.parametrize(
    "size, kernel, dilation, expected",
    [(1, 13, 1, 1), (2, 13, 1, 3), (4, 13, 1, 7), (8, 13, 1, 13), (2, 5, 3, 1), (4, 5, 3, 3), (64, 31, 1, 31),
     (1, 2, 1, 1), (1, 4, 1, 1)],  # even kernels: PyTorch's "same" pads (0, 1) / (1, 2), one side or both
)
def test_same_padding_keeps_the_reachable_centre(size, kernel, dilation, expected):
    x = torch.empty(1, 4, size, size)
    w = torch.empty(4, 1, kernel, kernel)
    args = normalize_conv_args(x, w, None, 1, "same", dilation, 4)
    cw, cargs = crop_unreachable_taps(x.shape[2:], w, args)
    assert cargs.kernel_size == (expected, expected)
    assert tuple(cw.shape[2:]) == (expected, expected)
    assert cargs.output_size((size, size)) == (size, size)
    if expected == kernel:
        assert cw is w and cargs is args


@pytest.mark.parametrize(
    "impl",
    [(None, None, None), ("kernels", "kernels", "kernels"), ("native", "native", "aten"),
     ("native_cl", "native_cl", "aten_cl"), ("fft", "fft", "fft")],
    ids=["auto", "kernels", "native", "native_cl", "fft"],
)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_small_maps_match_float64_reference_with_gradients(impl, nd):
    torch.manual_seed(nd)
    size, k, c = (3, 2, 1)[nd - 1] * 2, 13, 5
    x = torch.randn(2, c, *(size,) * nd, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    w = torch.randn(c, 1, *(k,) * nd, dtype=torch.float64, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_(True)
    with force_impl(*impl):
        y = conv(x.float(), w.float(), None, 1, "same", 1, c).double()
        y64 = conv(x, w, None, 1, "same", 1, c)
    ref = F_CONV[nd](x_ref, w_ref, None, 1, "same", 1, c)
    torch.testing.assert_close(y64, ref)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ref)
    y64.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)  # full-size, zero on the dropped taps
    assert w.grad.shape == w.shape


def test_gradcheck_through_cropped_strided_dilated_conv():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 9, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    hyper = ((2, 1), (4, 4), (1, 2), 3)  # stride, padding, dilation, groups
    args = normalize_conv_args(x, w, b, *hyper)
    assert crop_unreachable_taps(x.shape[2:], w, args)[1].kernel_size == (2, 3)
    assert torch.autograd.gradcheck(lambda x, w, b: conv(x, w, b, *hyper), (x, w, b))
    torch.testing.assert_close(conv(x, w, b, *hyper), F.conv2d(x, w, b, *hyper))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's, from the reference
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    kernel=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    stride=st.integers(1, 2), dilation=st.integers(1, 3), pad=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    groups_dense=st.booleans(), same=st.booleans(),
)
def test_random_small_maps_match_float64_reference(size, kernel, stride, dilation, pad, groups_dense, same):
    if same:  # PyTorch's "same" (asymmetric for even kernels), stride 1 only
        pad, stride = "same", 1
    elif any(n + 2 * p < dilation * (k - 1) + 1 for n, k, p in zip(size, kernel, pad)):
        return
    c, groups = 4, (1 if groups_dense else 4)
    x = torch.randn(2, c, *size, dtype=torch.float64)
    w = torch.randn(c, c // groups, *kernel, dtype=torch.float64)
    torch.testing.assert_close(
        conv(x, w, None, stride, pad, dilation, groups), F.conv2d(x, w, None, stride, pad, dilation, groups)
    )


def _spy(monkeypatch, module, name, shapes):
    """Wrap ``module.name`` so every call records the kernel size of its weight argument."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        shapes.append(tuple(weight.shape[2:]))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("impl", ["native_cl", "native", "fft"])
def test_conv_hands_the_cropped_kernel_to_the_implementation(monkeypatch, impl):
    # the output is identical with or without cropping, so only the kernel that reaches the
    # implementation shows that conv() really crops (a 13x13 kernel on a 2x2 map: 3x3 is reachable)
    from largekernel.ops import autograd, native

    conv_module = sys.modules["largekernel.ops.conv"]  # the package re-exports the function as `conv`

    plan_shapes, impl_shapes = [], []
    _spy(monkeypatch, conv_module, "choose_plan", plan_shapes)
    if impl == "fft":
        _spy(monkeypatch, autograd, "fft_conv", impl_shapes)
    elif impl == "native":  # PyTorch's own call, differentiated by autograd
        real = conv_module._CONV_BY_DIM[2]
        monkeypatch.setitem(
            conv_module._CONV_BY_DIM, 2, lambda x, w, *a: impl_shapes.append(tuple(w.shape[2:])) or real(x, w, *a)
        )
    else:
        _spy(monkeypatch, native, "native_conv", impl_shapes)
    x = torch.randn(1, 4, 2, 2, requires_grad=True)
    w = torch.randn(4, 1, 13, 13, requires_grad=True)
    with force_impl(forward=impl):
        y = conv(x, w, None, 1, 6, 1, 4)
    assert plan_shapes == [(3, 3)]
    assert impl_shapes and set(impl_shapes) == {(3, 3)}
    y.sum().backward()
    assert w.grad.shape == w.shape and torch.count_nonzero(w.grad[..., :5, :]) == 0


def test_explain_plans_for_the_cropped_kernel(monkeypatch):
    from largekernel.ops import explain

    conv_module = sys.modules["largekernel.ops.conv"]

    shapes = []
    _spy(monkeypatch, conv_module, "choose_plan_for_explain", shapes)
    explain((2, 8, 1, 4), (8, 1, 13, 13), padding=6, groups=8)
    assert shapes == [(1, 7)]
