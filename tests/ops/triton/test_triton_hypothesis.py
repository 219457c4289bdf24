"""Hypothesis-drawn depthwise problems through the Triton kernels (interpreter) vs float64 F.conv."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from largekernel.ops import triton as lkt
from triton_helpers import assert_close, reference

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@st.composite
def problems(draw):
    nd = draw(st.sampled_from((1, 1, 2, 2, 2, 3)))
    c = draw(st.integers(1, 5))
    mult = draw(st.integers(1, 2))
    max_k = {1: 12, 2: 6, 3: 3}[nd]
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, d * (k - 1))) for k, d in zip(kernel, dilation))
    # spatial sizes from 1 up, as long as the output is non-empty (inputs may be smaller than K)
    max_s = {1: 24, 2: 8, 3: 5}[nd]
    spatial = []
    for k, d, p in zip(kernel, dilation, padding):
        lo = max(1, d * (k - 1) + 1 - 2 * p)
        spatial.append(draw(st.integers(lo, max(lo, max_s))))
    batch = draw(st.integers(1, 2))
    layout = draw(st.sampled_from(("contiguous", "channels_last", "strided")))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    return nd, (batch, c, *spatial), mult, kernel, stride, padding, dilation, layout, dtype, seed


def _make(shape, layout, dtype, g):
    x = torch.randn(shape, generator=g).to(dtype)
    if layout == "channels_last":
        return x.transpose(1, -1).contiguous().transpose(1, -1)  # channels are the unit-stride axis
    if layout == "strided":
        return torch.cat([x, x], dim=-1)[..., : shape[-1]]  # a view with a wider row stride
    return x


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problems(), st.booleans())
def test_random_problems_match_float64(problem, deterministic):
    nd, shape, mult, kernel, stride, padding, dilation, layout, dtype, seed = problem
    g = torch.Generator().manual_seed(seed)
    x = _make(shape, layout, dtype, g)
    w = torch.randn((shape[1] * mult, 1, *kernel), generator=g).to(dtype)
    y = lkt.depthwise_forward(x, w, stride, padding, dilation)
    gy = _make(tuple(y.shape), layout, dtype, g)
    ry, rgx, rgw = reference(x, w, gy, stride, padding, dilation)
    assert_close(y, ry, dtype, "forward")
    assert_close(lkt.depthwise_grad_input(gy, w, x.shape, stride, padding, dilation), rgx, dtype, "grad_input")
    gw = lkt.depthwise_grad_weight(x, gy, kernel, stride, padding, dilation, deterministic=deterministic)
    assert_close(gw, rgw, dtype, "grad_weight")
