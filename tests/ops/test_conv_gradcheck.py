"""float64 gradcheck of every engine implementation on tiny shapes, and double-backward fallback."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from largekernel.ops import conv, force_impl

IMPLS = [
    ("native", "native", "aten"),
    ("native_cl", "native_cl", "aten_cl"),
    ("fft", "fft", "fft"),
    ("kernels", "kernels", "kernels"),
    ("native", "aten", "fft"),
]

CASES = [
    # x shape, weight shape, kwargs
    ((2, 3, 9), (3, 1, 5), dict(padding="same", groups=3)),
    ((1, 2, 7, 6), (4, 1, 4, 3), dict(padding="same", groups=2)),
    ((2, 4, 8, 7), (4, 2, 3, 5), dict(stride=(2, 1), padding=(1, 3), dilation=(2, 1), groups=2)),
    ((1, 2, 5, 4, 6), (2, 1, 3, 3, 2), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 6), (2, 3, 4), dict(stride=3, padding=2, dilation=2)),
]


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: "-".join(i))
@pytest.mark.parametrize("case", CASES, ids=["1d-same", "2d-even-mult", "2d-grouped-strided", "3d-dw", "1d-dense"])
def test_gradcheck(impl, case):
    xs, ws, kw = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(xs, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(ws, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(ws[0], dtype=torch.float64, generator=gen, requires_grad=True)

    def f(x, w, b):
        with force_impl(*impl):
            return conv(x, w, b, **kw)

    depthwise = ws[1] == 1 and ws[0] == xs[1] == kw.get("groups", 1)
    if "kernels" in impl and not depthwise:
        # the compiled kernels serve one filter per channel only; forcing them elsewhere is an error
        from largekernel.ops import ForcedImplementationError

        with pytest.raises(ForcedImplementationError):
            f(x, w, b).sum().backward()
        return
    assert gradcheck(f, (x, w, b), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize(
    "impl", [("native_cl", "native_cl", "kernels"), ("fft", "fft", "fft")], ids=lambda i: "-".join(i)
)
def test_double_backward_falls_back(impl):
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        with force_impl(*impl):
            return conv(x, w, b, padding=2, groups=2)

    assert gradgradcheck(f, (x, w, b), eps=1e-6, atol=1e-5, fast_mode=True)


def test_double_backward_default_dispatch():
    # gradient penalty style use: create_graph=True through the default (custom-backward) plan
    x = torch.randn(1, 4, 20, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 13, 13, dtype=torch.float64, requires_grad=True)
    y = conv(x, w, padding=6, groups=4)
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    gw2 = torch.autograd.grad(gx.pow(2).sum(), w)[0]
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    yr = torch.nn.functional.conv2d(xr, wr, padding=6, groups=4)
    (gxr,) = torch.autograd.grad(yr.pow(2).sum(), xr, create_graph=True)
    gw2r = torch.autograd.grad(gxr.pow(2).sum(), wr)[0]
    torch.testing.assert_close(gw2, gw2r)
