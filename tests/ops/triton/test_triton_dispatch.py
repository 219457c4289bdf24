"""The dispatcher-facing Triton wiring (largekernel.ops.triton_dispatch), in interpreter mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import largekernel.ops
from largekernel.ops import triton_dispatch
from largekernel.ops.validation import normalize_conv_args
from triton_helpers import assert_close, reference


def _args(x, w, padding, groups, stride=1, dilation=1):
    return normalize_conv_args(x, w, None, stride, padding, dilation, groups)


def test_plan_ok_for_depthwise_under_the_interpreter():
    x, w = torch.randn(1, 4, 9, 9), torch.randn(8, 1, 7, 7)
    assert triton_dispatch.triton_plan_ok(x, tuple(w.shape), _args(x, w, 3, 4))
    assert triton_dispatch.triton_reason(x.half(), tuple(w.shape), _args(x, w, 3, 4)) is None


@pytest.mark.parametrize(
    "x,w,padding,groups,words",
    [
        (torch.randn(1, 4, 9, 9), torch.randn(4, 4, 3, 3), 1, 1, "not depthwise"),
        (torch.randn(1, 4, 9, 9), torch.randn(4, 2, 3, 3), 1, 2, "not depthwise"),
        (torch.randn(1, 4, 9, 9), torch.randn(4, 1, 4, 4), "same", 4, "asymmetric"),
        (torch.randn(1, 4, 9, 9).double(), torch.randn(4, 1, 3, 3).double(), 1, 4, "dtype"),
    ],
)
def test_plan_refused_with_reason(x, w, padding, groups, words):
    reason = triton_dispatch.triton_reason(x, tuple(w.shape), _args(x, w, padding, groups))
    assert reason is not None and words in reason
    assert not triton_dispatch.triton_plan_ok(x, tuple(w.shape), _args(x, w, padding, groups))


def test_preferred_window():
    x = torch.randn(1, 4, 64, 64)
    assert triton_dispatch.triton_preferred(_args(x, torch.randn(4, 1, 31, 31), 15, 4))
    assert not triton_dispatch.triton_preferred(_args(x, torch.randn(4, 1, 3, 3), 1, 4))
    x1 = torch.randn(1, 4, 9000)
    assert not triton_dispatch.triton_preferred(_args(x1, torch.randn(4, 1, 8191), 4095, 4))


def test_engine_entry_points_with_bias_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g)
    w = torch.randn(6, 1, 5, 3, generator=g)
    b = torch.randn(6, generator=g)
    stride, pad, dil = (2, 1), (2, 1), (1, 2)
    y = triton_dispatch.triton_forward(x, w, b, stride, pad, dil)
    ref = F.conv2d(x.double(), w.double(), b.double(), stride, pad, dil, 3)
    assert_close(y, ref, torch.float32, "forward+bias")
    gy = torch.randn(y.shape, generator=g)
    _, rgx, rgw = reference(x, w, gy, stride, pad, dil)
    assert_close(triton_dispatch.triton_grad_input(gy, x, w, stride, pad, dil), rgx, torch.float32, "grad_input")
    for det in (False, True):
        gw = triton_dispatch.triton_grad_weight(gy, x, w, stride, pad, dil, deterministic=det)
        assert_close(gw, rgw, torch.float32, "grad_weight")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_conv_forced_to_triton(dtype, monkeypatch):
    """ops.conv with force_impl('triton'): same-padding even kernel, bias, all gradients vs float64."""
    from largekernel.ops.triton import launch

    calls = []
    for name in ("depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight"):
        real = getattr(launch, name)

        def counted(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(launch, name, counted)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 6, 7, generator=g).to(dtype).requires_grad_(True)
    w = torch.randn(3, 1, 4, 5, generator=g).to(dtype).requires_grad_(True)
    b = torch.randn(3, generator=g).to(dtype).requires_grad_(True)
    with largekernel.ops.force_impl(forward="triton", grad_input="triton", grad_weight="triton"):
        plan = largekernel.ops.explain(x.shape, w.shape, padding="same", groups=3, dtype=dtype)
        assert plan.forward == plan.grad_input == plan.grad_weight == "triton"
        y = largekernel.ops.conv(x, w, b, padding="same", groups=3)
    gy = torch.randn(y.shape, generator=g).to(dtype)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)
    xr, wr, br = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    yr = F.conv2d(xr, wr, br, 1, "same", 1, 3)
    rgx, rgw, rgb = torch.autograd.grad(yr, (xr, wr, br), gy.double())
    for got, ref, what in ((y, yr, "y"), (gx, rgx, "gx"), (gw, rgw, "gw"), (gb, rgb, "gb")):
        assert_close(got.detach(), ref.detach(), dtype, what)
    # the Triton kernels really ran (a silent fallback to PyTorch would also give right numbers)
    assert sorted(calls) == ["depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight"]


def test_forcing_triton_on_unsupported_input_is_a_clear_error():
    """float64 is not a Triton dtype: forcing it must fail loudly (never a silent wrong path)."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with largekernel.ops.force_impl(forward="triton"), pytest.raises(Exception, match="float32, float16 or bfloat16"):
        largekernel.ops.conv(x, w, padding=1, groups=2)
