"""The CPU dispatch table of ops/dispatch.py at every threshold, and its forcing/autotuning state.

Outputs are identical whichever implementation runs, so a wrong threshold or a flipped
comparison only shows as a slow (or, for the PyTorch paths that are known to be broken, wrong)
implementation being chosen. These tests pin the table to the measurements documented in the
module docstring and next to each constant: each threshold is checked on both sides, for 1-D,
2-D and 3-D, with and without the compiled kernels (their availability is patched so the table
is checked the same way on machines with or without a C compiler). Changing a threshold means
re-measuring and updating the table below.
"""

from __future__ import annotations

import logging

import pytest
import torch

from largekernel.ops import dispatch, native
from largekernel.ops.dispatch import Plan, choose_plan, force_impl, heuristic_plan
from largekernel.ops.validation import normalize_conv_args

AUTO = ("autograd", "autograd")


def _x(shape, layout="nc", dtype=torch.float32):
    x = torch.empty(shape, dtype=dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    return x


def _plan(x, k, *, groups=None, in_per_group=1, out_per_group=1, stride=1, dilation=1, requires_grad=True,
          kernels=True, kernels_gw=None, monkeypatch=None):
    nd = x.dim() - 2
    c = x.shape[1]
    groups = c // in_per_group if groups is None else groups
    ks = (k,) * nd if isinstance(k, int) else tuple(k)
    w = torch.empty((groups * out_per_group, c // groups) + ks, dtype=x.dtype)
    args = normalize_conv_args(x, w, None, stride, 0, dilation, groups)
    kernels_gw = kernels if kernels_gw is None else kernels_gw
    monkeypatch.setattr(native, "kernels_forward_ok", lambda *a: kernels)
    monkeypatch.setattr(native, "kernels_grad_weight_ok", lambda *a: kernels_gw)
    return heuristic_plan(x, tuple(w.shape), args, requires_grad)


def _impls(p: Plan) -> tuple[str, str, str]:
    return p.forward, p.grad_input, p.grad_weight


# (input shape, layout, K, compiled kernels available, expected (forward, grad_input, grad_weight))
BIG_2D = (1, 64, 64, 64)  # 1 << 18 elements: large enough for the compiled 2-D forward
SMALL_2D = (1, 3, 133, 657)  # (1 << 18) - 1 elements
TABLE = [
    # 2-D depthwise: tiny kernels (K < 4) stay on PyTorch autograd, channels-last (its weight gradient is fine)
    (BIG_2D, "nc", 3, True, ("native_cl",) + AUTO),
    # NCHW input: oneDNN NCHW forward up to K = 13, compiled weight gradient from K = 4
    (BIG_2D, "nc", 4, True, ("native", "native", "kernels")),
    (BIG_2D, "nc", 13, True, ("native", "native", "kernels")),
    (BIG_2D, "nc", 14, True, ("native_cl", "native_cl", "kernels")),
    # channels-last input: compiled forward at K = 11..13 (oneDNN channels-last's slow spot)
    (BIG_2D, "cl", 10, True, ("native_cl", "native_cl", "kernels")),
    (BIG_2D, "cl", 11, True, ("kernels", "kernels", "kernels")),
    (BIG_2D, "cl", 13, True, ("kernels", "kernels", "kernels")),
    (BIG_2D, "cl", 14, True, ("native_cl", "native_cl", "kernels")),
    # ... but not on small maps, where packing costs more than oneDNN's conv
    (SMALL_2D, "cl", 11, True, ("native_cl", "native_cl", "kernels")),
    # without compiled kernels: FFT weight gradient from K = 11, PyTorch channels-last below
    (BIG_2D, "nc", 10, False, ("native", "native", "aten_cl")),
    (BIG_2D, "nc", 11, False, ("native", "native", "fft")),
    (BIG_2D, "cl", 11, False, ("native_cl", "native_cl", "fft")),
    (BIG_2D, "nc", 31, False, ("native_cl", "native_cl", "fft")),
    # 1-D: compiled forward from K = 5 to K = 2047, FFT from 2048 (512 without compiled kernels)
    ((1, 4, 4096), "nc", 1, True, ("native",) + AUTO),
    ((1, 4, 4096), "nc", 3, True, ("native",) + AUTO),
    ((1, 4, 4096), "nc", 4, True, ("native", "native", "kernels")),
    ((1, 4, 4096), "nc", 5, True, ("kernels", "kernels", "kernels")),
    ((1, 4, 4096), "nc", 2047, True, ("kernels", "kernels", "kernels")),
    ((1, 4, 4096), "nc", 2048, True, ("fft", "fft", "kernels")),
    ((1, 4, 4096), "nc", 13, False, ("native", "native", "aten_cl")),
    ((1, 4, 4096), "nc", 14, False, ("native_cl", "native_cl", "aten_cl")),
    ((1, 4, 4096), "nc", 63, False, ("native_cl", "native_cl", "aten_cl")),
    ((1, 4, 4096), "nc", 64, False, ("native_cl", "native_cl", "fft")),
    ((1, 4, 4096), "nc", 511, False, ("native_cl", "native_cl", "fft")),
    ((1, 4, 4096), "nc", 512, False, ("fft", "fft", "fft")),
    # 3-D: channels-last oneDNN up to K = 8, compiled forward K = 9..17; FFT at K >= 13 without kernels
    ((1, 2, 20, 20, 20), "nc", 3, True, ("native_cl",) + AUTO),
    ((1, 2, 20, 20, 20), "nc", 8, True, ("native_cl", "native_cl", "kernels")),
    ((1, 2, 20, 20, 20), "nc", 9, True, ("kernels", "kernels", "kernels")),
    ((1, 2, 20, 20, 20), "nc", 17, True, ("kernels", "kernels", "kernels")),
    ((1, 2, 20, 20, 20), "nc", 18, True, ("native_cl", "native_cl", "kernels")),
    ((1, 2, 20, 20, 20), "nc", 8, False, ("native_cl", "native_cl", "aten_cl")),
    ((1, 2, 20, 20, 20), "nc", 9, False, ("native_cl", "native_cl", "fft")),
    ((1, 2, 20, 20, 20), "nc", 12, False, ("native_cl", "native_cl", "fft")),
    ((1, 2, 20, 20, 20), "nc", 13, False, ("fft", "fft", "fft")),
]


# what explain() prints as the reason of a depthwise plan: one description, then these parts
REASON_PARTS = {
    "forward: FFT (cost independent of K)",
    "forward: oneDNN in the input's NC* layout",
    "forward: compiled depthwise kernel",
    "forward: oneDNN channels-last",
    "forward: oneDNN channels-last (input already channels-last)",
    "tiny kernel: PyTorch autograd",
    "tiny kernel: PyTorch autograd through the channels-last conv",
    "strided small kernel: PyTorch autograd through the channels-last conv",
    "grad_input: forward conv with the flipped kernel",
    "grad_weight: compiled kernel",
    "grad_weight: FFT correlation (K >= 11)",
    "grad_weight: FFT correlation (K >= 64)",
    "grad_weight: FFT correlation (K >= 9)",
    "grad_weight: PyTorch channels-last backward",
}


@pytest.mark.parametrize("shape, layout, k, kernels, expected", TABLE)
def test_depthwise_table(shape, layout, k, kernels, expected, monkeypatch):
    plan = _plan(_x(shape, layout), k, kernels=kernels, monkeypatch=monkeypatch)
    assert _impls(plan) == expected
    assert plan.compute_dtype == torch.float32 and not plan.autotuned
    assert plan.uses_autograd == (expected[1:] == AUTO)
    first, *parts = plan.reason.split("; ")
    assert first.startswith("depthwise-like ") and first.endswith(f"kernel extent {k}")
    assert set(parts) <= REASON_PARTS and parts[0].startswith(("forward: ", "tiny kernel"))


def test_every_reason_part_is_used(monkeypatch):
    seen = set()
    for shape, layout, k, kernels, _ in TABLE:
        seen |= set(_plan(_x(shape, layout), k, kernels=kernels, monkeypatch=monkeypatch).reason.split("; ")[1:])
    x = _x((1, 2, 24, 24))
    seen |= set(_plan(x, 5, stride=2, kernels=False, monkeypatch=monkeypatch).reason.split("; ")[1:])
    assert seen == REASON_PARTS


def test_forward_only_plans_have_no_backward(monkeypatch):
    plan = _plan(_x(BIG_2D, "cl"), 11, requires_grad=False, monkeypatch=monkeypatch)
    assert _impls(plan) == ("kernels", "none", "none")
    assert plan.reason == ("depthwise-like 2-D conv (groups=64, 1 in-ch/group, 1 out-ch/group), kernel extent 11; "
                           "forward: compiled depthwise kernel; no grad needed")
    # tiny kernels too: the tiny-kernel rule is about PyTorch's backward
    plan = _plan(_x((1, 4, 4096)), 3, requires_grad=False, monkeypatch=monkeypatch)
    assert _impls(plan) == ("native", "none", "none")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_strided_small_kernels_stay_on_pytorch_autograd(nd, monkeypatch):
    """K < 9 with a stride: PyTorch autograd (timm's mobilenetv3 5x5 stride-2 convs); from 9 custom."""
    x = _x((1, 2) + (24,) * nd)
    for k, stride in ((8, 2), (5, (1,) * (nd - 1) + (2,))):
        # (1-D: the compiled forward wins from K = 5, and then its backward is used too)
        plan = _plan(x, k, stride=stride, kernels=False, monkeypatch=monkeypatch)
        assert plan.uses_autograd and "strided small kernel: PyTorch autograd" in plan.reason
    plan = _plan(x, 4, stride=2, kernels=False, monkeypatch=monkeypatch)
    assert plan.uses_autograd and "strided small kernel: PyTorch autograd" in plan.reason
    plan = _plan(x, 3, stride=2, monkeypatch=monkeypatch)
    assert plan.uses_autograd and "tiny kernel" in plan.reason and "strided" not in plan.reason
    plan = _plan(x, 9, stride=2, kernels=False, monkeypatch=monkeypatch)
    assert not plan.uses_autograd and plan.grad_input == plan.forward
    assert "grad_input: forward conv with the flipped kernel" in plan.reason
    plan = _plan(x, 8, stride=1, kernels=False, monkeypatch=monkeypatch)
    assert not plan.uses_autograd


def test_broken_channels_last_weight_gradient_is_avoided(monkeypatch):
    """3-D grouped strided: PyTorch's channels-last weight gradient is garbage, stay NCDHW."""
    x = _x((1, 2, 20, 20, 20))
    plan = _plan(x, 3, stride=2, monkeypatch=monkeypatch)
    assert _impls(plan) == ("native",) + AUTO and "channels-last" in plan.reason
    plan = _plan(x, 9, stride=2, kernels=False, monkeypatch=monkeypatch)
    assert _impls(plan) == ("native_cl", "native_cl", "fft")
    plan = _plan(x, 5, stride=(1, 1, 2), dilation=2, kernels=False, monkeypatch=monkeypatch)  # K = 9 via dilation
    assert _impls(plan) == ("native_cl", "native_cl", "fft")
    plan = _plan(x, (9, 1, 1), stride=2, kernels=False, monkeypatch=monkeypatch)
    assert plan.grad_weight == "fft"
    plan = _plan(x, (8, 1, 1), stride=2, kernels=False, monkeypatch=monkeypatch)
    assert plan.uses_autograd
    # K = 9 without FFT for the weight gradient needs the NC* PyTorch backward
    monkeypatch.setattr(dispatch, "DW_FFT_GW_MIN_K", {1: 64, 2: 11, 3: 10})
    plan = _plan(x, 9, stride=2, kernels=False, monkeypatch=monkeypatch)
    assert plan.grad_weight == "aten"
    assert plan.reason.split("; ")[-1] == "grad_weight: PyTorch NC* backward (its channels-last one is broken for this case)"


def test_1d_tiny_kernel_reason_has_no_layout(monkeypatch):
    plan = _plan(_x((1, 4, 64)), 3, monkeypatch=monkeypatch)
    assert plan.reason.endswith("tiny kernel: PyTorch autograd")


@pytest.mark.parametrize("nd, k_fft", [(1, 64), (2, 21), (3, 11)])
def test_dense_convolutions_use_fft_only_for_large_kernels(nd, k_fft, monkeypatch):
    x = _x((1, 8) + (k_fft + 2,) * nd)
    small = _plan(x, k_fft - 1, groups=1, monkeypatch=monkeypatch)
    assert _impls(small) == ("native",) + AUTO and small.compute_dtype == torch.float32
    assert small.reason == f"dense {nd}-D conv with small kernel ({k_fft - 1}): PyTorch/oneDNN"
    big = _plan(x, k_fft, groups=1, monkeypatch=monkeypatch)
    assert _impls(big) == ("fft", "fft", "fft")
    assert f"kernel extent {k_fft} >= {k_fft}" in big.reason
    # more than 4 input channels per group counts as dense, up to 4 as depthwise-like
    assert _plan(x, k_fft - 1, in_per_group=8, monkeypatch=monkeypatch).uses_autograd
    x10 = _x((1, 10) + (k_fft + 2,) * nd)
    five = _plan(x10, max(k_fft - 1, 4), in_per_group=5, monkeypatch=monkeypatch)
    assert five.reason.startswith(f"dense {nd}-D conv")
    like = _plan(x, max(k_fft - 1, 4), in_per_group=4, monkeypatch=monkeypatch)
    assert "depthwise-like" in like.reason and "4 in-ch/group" in like.reason


def test_depthwise_reason_describes_the_convolution(monkeypatch):
    plan = _plan(_x((1, 4, 64, 64)), 5, out_per_group=2, monkeypatch=monkeypatch)
    assert plan.reason.startswith("depthwise-like 2-D conv (groups=4, 1 in-ch/group, 2 out-ch/group), kernel extent 5")
    plan = _plan(_x(BIG_2D, "cl"), 15, kernels=False, monkeypatch=monkeypatch)
    assert "forward: oneDNN channels-last (input already channels-last)" in plan.reason
    assert "grad_weight: FFT correlation (K >= 11)" in plan.reason


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_is_computed_in_float32(dtype, monkeypatch):
    dense = _plan(_x((1, 4, 16, 16), dtype=dtype), 3, groups=1, monkeypatch=monkeypatch)
    assert _impls(dense) == ("native", "native", "aten") and dense.compute_dtype == torch.float32
    assert "computed in float32" in dense.reason
    # depthwise: no tiny-kernel autograd shortcut (that would compute in half precision)
    dw = _plan(_x((1, 4, 16, 16), dtype=dtype), 3, kernels=False, monkeypatch=monkeypatch)
    assert _impls(dw) == ("native", "native", "aten_cl") and dw.compute_dtype == torch.float32
    big = _plan(_x((1, 4, 24, 24), dtype=dtype), 21, groups=1, monkeypatch=monkeypatch)
    assert _impls(big) == ("fft", "fft", "fft") and big.compute_dtype == torch.float32


def test_float64_plans_compute_in_float64(monkeypatch):
    x = _x((1, 4, 24, 24), dtype=torch.float64)
    for plan in (
        _plan(x, 3, groups=1, monkeypatch=monkeypatch),  # dense, PyTorch autograd
        _plan(x, 21, groups=1, monkeypatch=monkeypatch),  # dense, FFT
        _plan(x, 3, monkeypatch=monkeypatch),  # tiny depthwise, PyTorch autograd
        _plan(x, 9, monkeypatch=monkeypatch),  # depthwise, custom backward
        _plan(x, 9, requires_grad=False, monkeypatch=monkeypatch),
        _plan(_x((0, 4, 24, 24), dtype=torch.float64), 9, monkeypatch=monkeypatch),  # empty
    ):
        assert plan.compute_dtype == torch.float64


def test_compiled_kernels_are_asked_about_the_compute_dtype(monkeypatch):
    seen = []
    monkeypatch.setattr(native, "kernels_forward_ok", lambda xk, shape, args: seen.append((xk.dtype, shape)) or True)
    monkeypatch.setattr(native, "kernels_grad_weight_ok", lambda xk, shape, args: seen.append((xk.dtype, shape)) or True)
    x = _x((1, 4, 64), dtype=torch.bfloat16)
    w = torch.empty(4, 1, 7, dtype=torch.bfloat16)
    heuristic_plan(x, tuple(w.shape), normalize_conv_args(x, w, None, 1, 0, 1, 4), True)
    assert seen == [(torch.float32, (4, 1, 7))] * 2


def test_empty_input_goes_to_pytorch(monkeypatch):
    plan = _plan(_x((0, 4, 64, 64)), 31, monkeypatch=monkeypatch)
    assert _impls(plan) == ("native",) + AUTO and plan.reason == "empty input: PyTorch"


def test_other_devices_use_the_vendor_library_or_fft():
    def plan(shape, k, groups, dtype=torch.float32):
        x = torch.empty(shape, dtype=dtype, device="meta")
        w = torch.empty((shape[1], shape[1] // groups) + (k,) * (len(shape) - 2), dtype=dtype, device="meta")
        return heuristic_plan(x, tuple(w.shape), normalize_conv_args(x, w, None, 1, 0, 1, groups), True)

    p = plan((1, 4, 128, 128), 83, 1)
    assert _impls(p) == ("native",) + AUTO and p.reason == "meta: vendor library"
    p = plan((1, 4, 128, 128), 84, 1, torch.bfloat16)
    assert _impls(p) == ("fft", "fft", "fft") and p.compute_dtype == torch.bfloat16  # half stays half off-CPU
    assert p.reason == "meta: kernel extent 84 is very large -> FFT"
    p = plan((1, 4, 300), 255, 1)
    assert p.forward == "native"
    assert plan((1, 4, 300), 256, 1).forward == "fft"
    assert plan((1, 4, 50, 50, 50), 43, 1).forward == "native"
    assert plan((1, 4, 50, 50, 50), 44, 1).forward == "fft"
    # a depthwise kernel in Triton's window: the note says why Triton did not run
    p = plan((1, 4, 64, 64), 31, 4)
    assert p.forward == "native" and p.reason.startswith("meta: vendor library (Triton not used: ")


def test_other_devices_prefer_triton_when_it_can_run(monkeypatch):
    from largekernel.ops import triton_dispatch

    monkeypatch.setattr(triton_dispatch, "triton_reason", lambda *a: None)
    xb = torch.empty(1, 4, 64, 64, device="meta", dtype=torch.bfloat16)
    wb = torch.empty(4, 1, 9, 9, device="meta", dtype=torch.bfloat16)
    pb = heuristic_plan(xb, tuple(wb.shape), normalize_conv_args(xb, wb, None, 1, 0, 1, 4), True)
    assert pb.forward == "triton" and pb.compute_dtype == torch.bfloat16  # Triton computes half types itself
    x = torch.empty(1, 4, 64, 64, device="meta")
    for k, out_mult, expected in ((31, 1, "triton"), (7, 2, "triton"), (6, 1, "native")):
        w = torch.empty(4 * out_mult, 1, k, k, device="meta")
        args = normalize_conv_args(x, w, None, 1, 0, 1, 4)
        assert heuristic_plan(x, tuple(w.shape), args, True).forward == expected
    w = torch.empty(4, 1, 31, 31, device="meta")
    args = normalize_conv_args(x, w, None, 1, 0, 1, 4)
    p = heuristic_plan(x, tuple(w.shape), args, True)
    assert _impls(p) == ("triton",) * 3 and p.reason == "meta: Triton depthwise kernels (kernel extent 31)"
    assert _impls(heuristic_plan(x, tuple(w.shape), args, False)) == ("triton", "none", "none")
    # grouped but not depthwise (2 input channels per group)
    x8 = torch.empty(1, 8, 64, 64, device="meta")
    w8 = torch.empty(4, 2, 31, 31, device="meta")
    assert heuristic_plan(x8, tuple(w8.shape), normalize_conv_args(x8, w8, None, 1, 0, 1, 4), True).forward == "native"


def test_channels_last_detection():
    assert dispatch._is_channels_last(_x((2, 3, 4, 5), "cl"))
    assert dispatch._is_channels_last(_x((2, 3, 4, 5, 6), "cl"))
    assert not dispatch._is_channels_last(_x((2, 3, 4, 5)))
    assert not dispatch._is_channels_last(_x((2, 3, 4, 5, 6)))
    assert not dispatch._is_channels_last(_x((2, 1, 4, 5), "cl"))  # both layouts at once: treated as NC*
    assert not dispatch._is_channels_last(_x((2, 3, 4)))
    # strided views that are neither layout
    assert not dispatch._is_channels_last(_x((2, 3, 4, 6))[..., ::2])
    assert not dispatch._is_channels_last(_x((2, 3, 4, 5, 6))[..., ::2])
    assert dispatch._numel(_x((2, 3, 4))) == 24 and dispatch._numel(_x(())) == 1
    assert dispatch._ShapeOnly([4, 1, 3]).dim() == 3


def test_plan_text_and_autograd_flag():
    plan = Plan("fft", "fft", "kernels", "because", torch.bfloat16, autotuned=True)
    assert str(plan).splitlines() == [
        "forward:     fft", "grad_input:  fft", "grad_weight: kernels", "compute in:  bfloat16 (autotuned)",
        "reason:      because",
    ]
    assert str(Plan("native", "autograd", "autograd", "r")).splitlines()[3] == "compute in:  float32"
    assert Plan("native", "autograd", "autograd", "r").uses_autograd
    assert not Plan("native", "native", "aten", "r").uses_autograd


# ------------------------------------------------------------------------------ forcing and state
def test_force_impl_rejects_unknown_names_and_mixed_autograd():
    for kw, name, allowed in (
        (dict(forward="x"), "forward", dispatch.FORWARD_IMPLS),
        (dict(grad_input="x"), "grad_input", dispatch.GRAD_INPUT_IMPLS),
        (dict(grad_weight="x"), "grad_weight", dispatch.GRAD_WEIGHT_IMPLS),
    ):
        with pytest.raises(ValueError) as info:
            with force_impl(**kw):
                pass
        assert str(info.value) == f"{name} must be one of {allowed}, got 'x'"
    for kw in (dict(grad_input="autograd", grad_weight="fft"), dict(grad_input="fft", grad_weight="autograd")):
        with pytest.raises(ValueError, match=r"^grad_input and grad_weight must both be 'autograd' or neither$"):
            with force_impl(**kw):
                pass
    with force_impl(grad_input="autograd", grad_weight="autograd"), force_impl(grad_input="autograd"):
        assert dispatch.forced_impl("grad_input") == "autograd"
    assert dispatch.forced_impl("grad_input") is None


def test_force_impl_nests_restores_and_changes_the_state_token():
    base = dispatch.state_token()
    assert dispatch.forced_impl("forward") is None
    with force_impl(forward="fft"):
        tok = dispatch.state_token()
        assert tok != base and tok[0] == (("forward", "fft"),)
        with force_impl(grad_weight="aten"):
            assert (dispatch.forced_impl("forward"), dispatch.forced_impl("grad_weight")) == ("fft", "aten")
            assert dispatch.state_token()[0] == (("forward", "fft"), ("grad_weight", "aten"))
        assert dispatch.forced_impl("grad_weight") is None
        with pytest.raises(RuntimeError), force_impl(forward="native"):
            raise RuntimeError
        assert dispatch.forced_impl("forward") == "fft"
    assert dispatch.state_token() == base and dispatch.forced_impl("forward") is None


def test_deterministic_nests_restores_and_changes_the_state_token():
    base = dispatch.state_token()
    with dispatch.deterministic():
        assert dispatch.state_token()[1] is True
        with dispatch.deterministic(False):
            assert dispatch.state_token() == base
        assert dispatch.state_token()[1] is True
        with pytest.raises(KeyError), dispatch.deterministic(0):
            raise KeyError
        assert dispatch.state_token()[1] is True
    assert dispatch.state_token() == base


def _choose(shape=(1, 4, 16, 16), k=5, groups=4, requires_grad=True, dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn((shape[1], shape[1] // groups) + (k,) * (len(shape) - 2), dtype=dtype)
    args = normalize_conv_args(x, w, None, 1, k // 2, 1, groups)
    return choose_plan(x, w, args, requires_grad), x, w, args


@pytest.mark.parametrize("requires_grad", [True, False])
def test_forced_plans_fill_in_the_rest(requires_grad):
    with force_impl(forward="fft"):
        plan, x, w, args = _choose(requires_grad=requires_grad)
    assert _impls(plan) == ("fft", "fft" if not requires_grad else plan.grad_input, plan.grad_weight)
    assert plan.reason == "forced by force_impl({'forward': 'fft'})"
    assert plan.key == (tuple(x.shape), tuple(w.shape), args.stride, args.padding, args.dilation, 4,
                        torch.float32, "cpu", requires_grad, False)
    with force_impl(forward="fft"):
        plan = _choose(requires_grad=False)[0]
    assert _impls(plan) == ("fft", "fft", "aten")  # "none" backward of a no-grad plan becomes usable
    # forcing only one side of a heuristic autograd plan cannot mix autograd with a custom backward
    heuristic = _choose(k=3)[0]  # tiny kernel: heuristic plan is PyTorch autograd
    assert heuristic.uses_autograd and heuristic.forward in ("native", "native_cl")
    with force_impl(grad_weight="fft"):
        plan = _choose(k=3)[0]
    assert _impls(plan) == (heuristic.forward, heuristic.forward, "fft")
    with force_impl(grad_input="fft"):
        plan = _choose(k=3)[0]
    assert _impls(plan) == (heuristic.forward, "fft", "aten")
    with force_impl(forward="native", grad_input="native"):
        plan = _choose(k=3)[0]
    assert _impls(plan) == ("native", "native", "aten")
    with force_impl(forward="native", grad_input="autograd", grad_weight="autograd"):
        plan = _choose(k=15, dtype=torch.bfloat16)[0]
    assert plan.uses_autograd and plan.compute_dtype == torch.bfloat16  # PyTorch differentiates it as is
    with force_impl(forward="native_cl", grad_input="autograd", grad_weight="autograd"):
        plan = _choose(k=15, dtype=torch.bfloat16)[0]
    assert plan.uses_autograd and plan.compute_dtype == torch.bfloat16
    with force_impl(forward="native", grad_input="native"):
        plan = _choose(k=15, dtype=torch.bfloat16)[0]
    assert plan.compute_dtype == torch.float32
    with force_impl(forward="fft", grad_input="autograd", grad_weight="autograd"):
        plan = _choose(k=15, dtype=torch.bfloat16)[0]
    assert plan.compute_dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_unforced_untuned_choice_is_the_heuristic_plan(dtype):
    plan, x, w, args = _choose(k=7, dtype=dtype)
    assert plan == heuristic_plan(x, tuple(w.shape), args, True)  # incl. the compute dtype
    assert plan.compute_dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert plan.key == (tuple(x.shape), tuple(w.shape), args.stride, args.padding, args.dilation, 4, dtype, "cpu", True,
                        False)


@pytest.fixture
def autotune_on():
    old = dispatch.get_autotune()
    dispatch.clear_autotune_cache()
    dispatch.set_autotune(True)
    yield
    dispatch.set_autotune(old)
    dispatch.clear_autotune_cache()


def test_set_autotune_takes_bools_only():
    old = dispatch.get_autotune()
    try:
        for value in (True, False):
            dispatch.set_autotune(value)
            assert dispatch.get_autotune() is value and dispatch.state_token()[2] is value
        with pytest.raises(TypeError, match=r"^enabled must be a bool, got int$"):
            dispatch.set_autotune(1)
    finally:
        dispatch.set_autotune(old)


def test_autotune_times_candidates_once_and_caches(autotune_on, monkeypatch):
    from largekernel.ops import autograd

    timed = []
    real = autograd.run_forward

    def counted(impl, *a, **k):
        timed.append(impl)
        return real(impl, *a, **k)

    monkeypatch.setattr(autograd, "run_forward", counted)
    plan, x, w, args = _choose(requires_grad=False)
    assert plan.autotuned and plan.grad_input == plan.grad_weight == "none"
    assert plan.reason.startswith("autotuned forward native=")
    candidates = {"native", "native_cl", "fft"} | ({"kernels"} if native.kernels_forward_ok(x, tuple(w.shape), args) else set())
    assert set(timed) == candidates and len(timed) == 3 * len(candidates)  # warm-up + 2 repeats
    assert plan.forward in candidates and plan.key == (tuple(x.shape), tuple(w.shape), args.stride, args.padding,
                                                       args.dilation, 4, torch.float32, "cpu", False, False)
    assert dispatch._TUNE_CACHE[plan.key] is plan
    timed.clear()
    assert _choose(requires_grad=False)[0] is plan and not timed  # cached
    with dispatch.deterministic():
        assert not _choose(requires_grad=False)[0].autotuned
    dense = _choose(shape=(1, 2, 8, 8), k=3, groups=1)[0]
    assert not dense.autotuned and not timed  # small dense convs are not tuned


def test_autotune_with_gradient_and_large_2d_kernel(autotune_on):
    plan = _choose(shape=(1, 2, 16, 16), k=15, groups=2)[0]
    assert plan.autotuned and plan.grad_input == plan.forward
    assert "; grad_weight fft=" in plan.reason and plan.grad_weight in dispatch.GRAD_WEIGHT_IMPLS
    # oneDNN's NCHW depthwise cliff above K = 13 (seconds per call): not even timed there
    assert plan.reason.startswith("autotuned forward native_cl=")
    assert _choose(shape=(1, 2, 16, 16), k=14, groups=2, requires_grad=False)[0].reason.startswith(
        "autotuned forward native_cl=")
    assert _choose(shape=(1, 2, 16, 16), k=13, groups=2, requires_grad=False)[0].reason.startswith(
        "autotuned forward native=")
    assert _choose(shape=(1, 2, 64), k=31, groups=2, requires_grad=False)[0].reason.startswith(
        "autotuned forward native=")  # 1-D has no cliff
    dense = _choose(shape=(1, 2, 24, 24), k=21, groups=1, requires_grad=False)[0]
    assert dense.autotuned  # dense convs with FFT-sized kernels are tuned
    assert dense.reason.startswith("autotuned forward native=")  # the cliff is depthwise-only


def test_autotune_times_half_inputs_in_the_compute_dtype_on_the_input_device(autotune_on, monkeypatch):
    from largekernel.ops import autograd

    seen = []
    real_fwd, real_gw = autograd.run_forward, autograd.compute_grad_weight

    def fwd(impl, x, w, *a, **k):
        seen.append(("forward", x.dtype, w.dtype, x.device.type, w.device.type))
        return real_fwd(impl, x, w, *a, **k)

    def gw(impl, gy, x, w, *a, **k):
        seen.append(("grad_weight", x.dtype, w.dtype, x.device.type, w.device.type))
        return real_gw(impl, gy, x, w, *a, **k)

    monkeypatch.setattr(autograd, "run_forward", fwd)
    monkeypatch.setattr(autograd, "compute_grad_weight", gw)
    x = torch.randn(1, 4, 12, 12, dtype=torch.bfloat16)
    w = torch.randn(4, 1, 5, 5, dtype=torch.bfloat16)
    args = normalize_conv_args(x, w, None, 1, 2, 1, 4)
    # the candidates must be made on the input's device, whatever the default device is (the
    # compiled kernels are left out: their workspace follows the default device)
    monkeypatch.setattr(native, "kernels_forward_ok", lambda *a: False)
    monkeypatch.setattr(native, "kernels_grad_weight_ok", lambda *a: False)
    torch.set_default_device("meta")
    try:
        plan = choose_plan(x, w, args, True)
    finally:
        torch.set_default_device(None)
    assert plan.autotuned and plan.compute_dtype == torch.float32
    assert seen and {s[1:] for s in seen} == {(torch.float32, torch.float32, "cpu", "cpu")}
    assert {s[0] for s in seen} == {"forward", "grad_weight"}


def _fake_clock(monkeypatch, forward_cost, grad_weight_cost, fail=()):
    """Autotuning with a deterministic clock: each candidate "takes" the given seconds."""
    from largekernel.ops import autograd

    last = []
    real_fwd, real_gw = autograd.run_forward, autograd.compute_grad_weight

    def fwd(impl, *a, **k):
        last.append(forward_cost[impl])
        if impl in fail:
            raise RuntimeError("boom")
        return real_fwd(impl, *a, **k)

    def gw(impl, *a, **k):
        last.append(grad_weight_cost[impl])
        if impl in fail:
            raise RuntimeError("boom")
        return real_gw(impl, *a, **k)

    def clock(fn, repeats=2):
        fn()
        return last[-1]

    monkeypatch.setattr(autograd, "run_forward", fwd)
    monkeypatch.setattr(autograd, "compute_grad_weight", gw)
    monkeypatch.setattr(dispatch, "_time", clock)
    # the compiled kernels are candidates when they support the call (asked with the weight shape)
    monkeypatch.setattr(native, "kernels_forward_ok", lambda xs, shape, args: shape == (4, 1, 5, 5))
    monkeypatch.setattr(native, "kernels_grad_weight_ok", lambda xs, shape, args: shape == (4, 1, 5, 5))


@pytest.mark.parametrize("best_fwd, best_gw", [("native_cl", "aten"), ("kernels", "aten_cl"), ("fft", "kernels")])
def test_autotune_picks_the_fastest_candidates_and_reports_their_times(best_fwd, best_gw, autotune_on, monkeypatch,
                                                                     caplog):
    fwd_cost = {"native": 0.004, "native_cl": 0.003, "fft": 0.002, "kernels": 0.009}  # 9.00ms, not 9.01
    fwd_cost[best_fwd] = 0.00125
    gw_cost = {"fft": 0.02, "aten": 0.03, "aten_cl": 0.04, "kernels": 0.05}
    gw_cost[best_gw] = 0.01
    _fake_clock(monkeypatch, fwd_cost, gw_cost)
    with caplog.at_level(logging.INFO, logger="largekernel.ops.dispatch"):
        plan = _choose(dtype=torch.float64)[0]
    assert [r.getMessage() for r in caplog.records] == [f"autotuned {plan.key} -> {best_fwd}/{best_fwd}/{best_gw}"]
    assert (plan.forward, plan.grad_input, plan.grad_weight) == (best_fwd, best_fwd, best_gw)
    assert plan.compute_dtype == torch.float64 and plan.autotuned
    ms = {k: f"{v * 1e3:.2f}ms" for k, v in fwd_cost.items()}
    gms = {k: f"{v * 1e3:.2f}ms" for k, v in gw_cost.items()}
    assert plan.reason == (
        f"autotuned forward native={ms['native']}, native_cl={ms['native_cl']}, fft={ms['fft']}, "
        f"kernels={ms['kernels']}; grad_weight fft={gms['fft']}, aten={gms['aten']}, aten_cl={gms['aten_cl']}, "
        f"kernels={gms['kernels']}"
    )
    no_grad = _choose(dtype=torch.float64, requires_grad=False)[0]
    assert _impls(no_grad) == (best_fwd, "none", "none") and no_grad.compute_dtype == torch.float64


def test_autotune_skips_failing_candidates_and_logs_why(autotune_on, monkeypatch, caplog):
    _fake_clock(monkeypatch, {"native": 0.001, "native_cl": 0.002, "fft": 0.003, "kernels": 0.004},
                {"fft": 0.01, "aten": 0.02, "aten_cl": 0.03, "kernels": 0.04}, fail=("native", "fft"))
    with caplog.at_level(logging.DEBUG, logger="largekernel.ops.dispatch"):
        plan = _choose()[0]
    assert (plan.forward, plan.grad_weight) == ("native_cl", "aten")
    assert "native=" not in plan.reason and "grad_weight fft=" not in plan.reason
    messages = [r.getMessage() for r in caplog.records]
    assert "autotune: forward native failed: boom" in messages
    assert "autotune: grad_weight fft failed: boom" in messages


def test_failing_autotune_falls_back_to_the_heuristic(autotune_on, monkeypatch, caplog):
    def boom(*a, **k):
        raise RuntimeError("no timer")

    monkeypatch.setattr(dispatch, "_autotune", boom)
    with caplog.at_level(logging.WARNING, logger="largekernel.ops.dispatch"):
        plan = _choose(requires_grad=False)[0]
    assert not plan.autotuned
    assert [r.getMessage() for r in caplog.records] == ["autotune failed (no timer); using the heuristic plan"]
    assert dispatch._TUNE_CACHE[plan.key] is plan


def test_time_takes_the_best_of_the_repeats(monkeypatch):
    ticks = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])
    monkeypatch.setattr(dispatch.time, "perf_counter", lambda: next(ticks))
    calls = []
    assert dispatch._time(lambda: calls.append(1), repeats=3) == 1.0
    assert len(calls) == 4


def test_forcing_and_deterministic_mode_are_per_thread():
    import threading

    seen = {}

    def worker():
        seen["forced"] = dispatch.forced_impl("forward")
        seen["token"] = dispatch.state_token()
        seen["plan"] = _choose()[0]

    base = dispatch.state_token()
    with force_impl(forward="fft"), dispatch.deterministic():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["forced"] is None and seen["token"] == base and seen["token"][:2] == ((), False)
    assert "forced" not in seen["plan"].reason
