"""Every engine implementation vs a float64 ``torch.nn.functional`` reference (outputs and all grads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from largekernel.ops import conv, force_impl

REF = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# (forward, grad_input, grad_weight); None = the dispatcher's own choice
IMPLS = [
    None,
    ("native", "native", "aten"),
    ("native_cl", "native_cl", "aten_cl"),
    ("fft", "fft", "fft"),
    ("kernels", "kernels", "kernels"),
    ("native", "aten", "fft"),
    ("native_cl", "autograd", "autograd"),
    ("fft", "autograd", "autograd"),
]


@st.composite
def conv_cases(draw):
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    kind = draw(st.sampled_from(["dense", "depthwise", "multiplier", "grouped"]))
    kmax = {1: 9, 2: 7, 3: 4}[nd]
    ks = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    if kind == "dense":
        groups, c_in, c_out = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "depthwise":
        c_in = draw(st.integers(1, 5))
        groups, c_out = c_in, c_in
    elif kind == "multiplier":
        c_in = draw(st.integers(1, 4))
        groups, c_out = c_in, c_in * draw(st.integers(2, 3))
    else:
        groups = draw(st.integers(2, 3))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    pad_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * nd if pad_kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    if pad_kind == "int":
        padding = draw(st.integers(0, 4))
    elif pad_kind == "tuple":
        padding = tuple(draw(st.integers(0, 4)) for _ in range(nd))
    else:
        padding = pad_kind
    # spatial sizes: sometimes smaller than the kernel (valid thanks to padding)
    sizes = []
    for i in range(nd):
        ext = dilation[i] * (ks[i] - 1) + 1
        if padding == "same":
            lo = 1
        else:
            p = padding if isinstance(padding, int) else (0 if padding == "valid" else padding[i])
            lo = max(1, ext - 2 * p)
        sizes.append(draw(st.integers(lo, lo + {1: 12, 2: 6, 3: 3}[nd])))
    batch = draw(st.integers(1, 2))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "noncontiguous", "unbatched"]))
    bias = draw(st.booleans())
    return dict(nd=nd, ks=ks, groups=groups, c_in=c_in, c_out=c_out, stride=stride, padding=padding,
                dilation=dilation, sizes=tuple(sizes), batch=batch, layout=layout, bias=bias)


def _make_input(case, dtype):
    shape = (case["batch"], case["c_in"], *case["sizes"])
    if case["layout"] == "noncontiguous":
        big = torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)
        return big[..., ::2]
    x = torch.randn(shape, dtype=dtype)
    if case["layout"] == "channels_last" and case["nd"] >= 2:
        fmt = torch.channels_last if case["nd"] == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    if case["layout"] == "unbatched":
        x = x[0]
    return x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    # floor the denominator so an all-zero reference (e.g. a window that only sees padding) is fine
    return ((a - b).norm() / b.norm().clamp_min(1.0)).item()


def _kernels_can_serve(case) -> bool:
    """Whether the compiled kernels can run this case's forward, grad_input and grad_weight: one
    filter per channel (no channel multiplier, whose flipped kernel is not depthwise) in 1-3-D."""
    from largekernel.ops import native

    return native.kernels_module() is not None and case["groups"] == case["c_in"] == case["c_out"] > 1


def _same_format(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dim() not in (4, 5):
        return a.is_contiguous() == b.is_contiguous()
    fmt = torch.channels_last if a.dim() == 4 else torch.channels_last_3d
    return (a.is_contiguous(), a.is_contiguous(memory_format=fmt)) == (
        b.is_contiguous(), b.is_contiguous(memory_format=fmt)
    )


def check_case(case, impl, dtype=torch.float32, tol=1e-5):
    from largekernel.ops import ForcedImplementationError

    x = _make_input(case, dtype).requires_grad_()
    w = torch.randn(case["c_out"], case["c_in"] // case["groups"], *case["ks"], dtype=dtype, requires_grad=True)
    b = torch.randn(case["c_out"], dtype=dtype, requires_grad=True) if case["bias"] else None
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    leaves = [t for t in (x, w, b) if t is not None]
    try:
        if impl is None:
            y = conv(x, w, b, **kw)
        else:
            with force_impl(*impl):
                y = conv(x, w, b, **kw)
        g = torch.randn(y.shape, dtype=torch.float64)
        grads = torch.autograd.grad(y, leaves, g.to(dtype))
    except ForcedImplementationError:
        # forcing the compiled kernels on a case they cannot serve must raise (never fall back silently)
        assert impl is not None and "kernels" in impl and not _kernels_can_serve(case), (case, impl)
        return
    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    br = b.detach().double().requires_grad_() if b is not None else None
    ref = REF[case["nd"]](xr, wr, br, **kw)
    assert y.shape == ref.shape
    assert y.dtype == dtype
    assert rel_err(y, ref) <= tol, (case, impl)
    # the output's memory format is the one PyTorch's own convolution returns for this input;
    # PyTorch's fallbacks for degenerate problems (batch 1, 1-sized dims, 1x1 kernels) answer
    # channels-last inputs idiosyncratically, so those are only checked for contiguous inputs
    with torch.no_grad():
        same_dtype = REF[case["nd"]](x.detach(), w.detach(), None if b is None else b.detach(), **kw)
    degenerate = case["batch"] < 2 or min(case["sizes"]) < 2 or max(case["ks"]) < 2
    if x.is_contiguous() or not degenerate:
        assert _same_format(y, same_dtype), (case, impl, y.stride(), same_dtype.stride())
    rleaves = [t for t in (xr, wr, br) if t is not None]
    rgrads = torch.autograd.grad(ref, rleaves, g)
    for name, a, r in zip(("x", "weight", "bias"), grads, rgrads):
        assert a.shape == r.shape and a.dtype == dtype
        assert rel_err(a, r) <= tol, (name, case, impl)
    if impl is not None and "kernels" in impl and _kernels_can_serve(case):
        assert grads  # nothing raised: the forced compiled kernels ran


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: "auto" if i is None else "-".join(i))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_matches_float64_reference(impl, case):
    check_case(case, impl)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: "auto" if i is None else "-".join(i))
@pytest.mark.parametrize(
    "case",
    [
        # large depthwise kernels (the engine's fast paths), even kernel with "same"
        dict(nd=2, ks=(13, 13), groups=6, c_in=6, c_out=6, stride=(1, 1), padding=6, dilation=(1, 1),
             sizes=(15, 14), batch=2, layout="contiguous", bias=True),
        dict(nd=2, ks=(8, 6), groups=4, c_in=4, c_out=4, stride=(1, 1), padding="same", dilation=(1, 1),
             sizes=(9, 11), batch=1, layout="channels_last", bias=False),
        dict(nd=2, ks=(17, 17), groups=3, c_in=3, c_out=6, stride=(2, 3), padding=8, dilation=(1, 1),
             sizes=(12, 19), batch=2, layout="contiguous", bias=True),
        dict(nd=1, ks=(63,), groups=8, c_in=8, c_out=8, stride=(1,), padding="same", dilation=(1,),
             sizes=(100,), batch=2, layout="contiguous", bias=True),
        dict(nd=1, ks=(20,), groups=5, c_in=5, c_out=5, stride=(2,), padding=7, dilation=(3,),
             sizes=(50,), batch=1, layout="noncontiguous", bias=True),
        dict(nd=3, ks=(7, 7, 7), groups=3, c_in=3, c_out=3, stride=(1, 1, 1), padding=3, dilation=(1, 1, 1),
             sizes=(6, 9, 8), batch=2, layout="channels_last", bias=True),
        dict(nd=2, ks=(5, 5), groups=2, c_in=4, c_out=6, stride=(1, 2), padding=(2, 4), dilation=(3, 2),
             sizes=(13, 12), batch=2, layout="contiguous", bias=True),
    ],
    ids=["dw13", "dw-even-same", "dw17-mult-stride", "1d-63-same", "1d-dil-stride", "3d-dw7", "grouped-dil"],
)
def test_large_kernel_cases(impl, case):
    check_case(case, impl)


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-10), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)], ids=str
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_every_float_dtype_matches_reference(dtype, tol, case):
    check_case(case, None, dtype=dtype, tol=tol)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_without_compiled_kernels_matches_reference(case):
    """LARGEKERNEL_DISABLE_NATIVE=1 (no compiled kernels): the pure-PyTorch paths stay exact."""
    from largekernel.ops import native

    saved = list(native._KERNELS_CACHE)
    native._KERNELS_CACHE[:] = [None]
    try:
        check_case(case, None)
    finally:
        native._KERNELS_CACHE[:] = saved
