"""The Triton depthwise kernels (interpreter mode) against float64 torch.nn.functional."""

from __future__ import annotations

import pytest
import torch

from largekernel.ops import triton as lkt
from largekernel.ops.triton import configs as cfgs
from largekernel.ops.triton import launch
from triton_helpers import assert_close, reference


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "cl":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if layout == "strided":  # a non-contiguous view: every other element of a wider last dim
        wide = torch.stack([x, torch.full_like(x, float("nan"))], dim=-1).flatten(-2)
        return wide[..., ::2]
    if layout == "transposed":  # channels as the unit-stride axis of a plain transpose (1-D "NLC")
        return x.transpose(1, -1).contiguous().transpose(1, -1)
    return x


def _run_all(x, w, stride, padding, dilation, *, deterministic=False, fwd_cfg=None, gw_cfg=None):
    y = launch.depthwise_forward(x, w, stride, padding, dilation, config=fwd_cfg)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype)
    gx = launch.depthwise_grad_input(gy, w, x.shape, stride, padding, dilation, config=fwd_cfg)
    gw = launch.depthwise_grad_weight(x, gy, w.shape[2:], stride, padding, dilation, deterministic, config=gw_cfg)
    return y, gy, gx, gw


def _check(shape, mult, kernel, stride, padding, dilation, dtype=torch.float32, layout="nchw", **kw):
    g = torch.Generator().manual_seed(0)
    x = _layout(torch.randn(shape, generator=g).to(dtype), layout)
    w = torch.randn((shape[1] * mult, 1, *kernel), generator=g).to(dtype)
    y, gy, gx, gw = _run_all(x, w, stride, padding, dilation, **kw)
    ry, rgx, rgw = reference(x, w, gy, stride, padding, dilation)
    assert_close(y, ry, dtype, "forward")
    assert_close(gx, rgx, dtype, "grad_input")
    assert_close(gw, rgw, dtype, "grad_weight")
    return x, y, gx


CASES = [
    # shape, multiplier, kernel, stride, padding, dilation, dtype, layout
    ((2, 5, 9, 8), 1, (3, 3), (1, 1), (1, 1), (1, 1), torch.float32, "nchw"),
    ((1, 3, 10, 9), 1, (4, 6), (1, 1), (2, 3), (1, 1), torch.float32, "cl"),  # even kernels
    ((1, 3, 11, 10), 2, (5, 5), (2, 2), (2, 2), (1, 1), torch.float32, "strided"),  # stride 2, mult 2
    ((2, 4, 9, 9), 1, (3, 5), (2, 1), (2, 4), (3, 2), torch.float32, "nchw"),  # dilation, mixed stride
    ((1, 2, 4, 5), 1, (9, 9), (1, 1), (4, 4), (1, 1), torch.float32, "nchw"),  # input smaller than K
    ((1, 6, 7, 7), 1, (15, 15), (1, 1), (7, 7), (1, 1), torch.float32, "cl"),  # large K, batch 1
    ((2, 5, 8, 7), 1, (7, 7), (1, 1), (3, 3), (1, 1), torch.float16, "cl"),
    ((2, 5, 8, 7), 3, (6, 5), (2, 1), (3, 2), (1, 1), torch.bfloat16, "nchw"),
    ((2, 3, 23), 1, (8,), (1,), (4,), (1,), torch.float32, "nchw"),  # 1-D, even K
    ((1, 4, 30), 2, (7,), (2,), (6,), (3,), torch.bfloat16, "transposed"),  # 1-D, NLC strides
    ((1, 3, 12), 1, (31,), (1,), (15,), (1,), torch.float16, "strided"),  # 1-D, K > L
    ((1, 3, 5, 6, 4), 2, (3, 2, 3), (2, 1, 2), (1, 1, 1), (1, 2, 1), torch.float32, "nchw"),  # 3-D
    ((1, 2, 4, 5, 6), 1, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), torch.bfloat16, "cl"),  # 3-D cl
]


@pytest.mark.parametrize("shape,mult,kernel,stride,padding,dilation,dtype,layout", CASES)
def test_against_float64_reference(shape, mult, kernel, stride, padding, dilation, dtype, layout):
    _check(shape, mult, kernel, stride, padding, dilation, dtype, layout)


@pytest.mark.sanitize_overflow
def test_no_int32_overflow_in_index_arithmetic():
    """With the interpreter's overflow sanitizer on: strided 2-D and 3-D cases, stride 2, dilation."""
    _check((1, 3, 6, 7), 2, (4, 3), (2, 1), (2, 1), (1, 2), torch.float32, "strided")
    _check((1, 2, 3, 4, 5), 1, (2, 3, 3), (1, 2, 1), (1, 1, 1), (2, 1, 1), torch.float16, "cl")


def test_tiles_smaller_than_problem_and_split_reductions():
    """C, H and W not multiples of the tile, several tap groups and split reductions."""
    fwd = cfgs.TileConfig(block_c=2, block_h=2, block_w=4)
    for deterministic in (True, False):
        gw = cfgs.GradWeightConfig(block_c=2, block_kw=2, block_w=4, splits=3)
        _check((1, 3, 5, 9), 2, (3, 5), (2, 1), (1, 2), (1, 1), deterministic=deterministic, fwd_cfg=fwd, gw_cfg=gw)


def test_every_gpu_candidate_config_is_correct():
    """The autotuner may pick any candidate: each must compute the same thing (shrunk to a tiny problem)."""
    g = torch.Generator().manual_seed(0)
    for layout, nd in (("sp", 2), ("cl", 2), ("sp", 1)):
        shape = (1, 3, 4, 5) if nd == 2 else (1, 3, 9)
        kernel = (3, 4) if nd == 2 else (5,)
        x = torch.randn(shape, generator=g)
        if layout == "cl":
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn((6, 1, *kernel), generator=g)
        stride, pad, dil = (1,) * nd, (1,) * nd, (1,) * nd
        out_w = shape[-1] + 2 - kernel[-1] + 1
        out_h = shape[-2] + 2 - kernel[-2] + 1 if nd == 2 else 1
        gy = torch.randn((1, 6, out_h, out_w) if nd == 2 else (1, 6, out_w), generator=g)
        ry, rgx, rgw = reference(x, w, gy, stride, pad, dil)
        for cfg in cfgs.candidates(layout, nd == 1, 6, out_h, out_w):
            assert_close(launch.depthwise_forward(x, w, stride, pad, dil, config=cfg), ry, x.dtype, f"fwd {cfg}")
            gx = launch.depthwise_grad_input(gy, w, x.shape, stride, pad, dil, config=cfg)
            assert_close(gx, rgx, x.dtype, f"grad_input {cfg}")
        for cfg in cfgs.grad_weight_candidates(layout, 6, kernel[-1], out_w):
            gw = launch.depthwise_grad_weight(x, gy, kernel, stride, pad, dil, config=cfg)
            assert_close(gw, rgw, x.dtype, f"grad_weight {cfg}")


def test_public_wrappers_match_launch_and_keep_layout():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 5, 5, generator=g)
    y = lkt.depthwise_forward(x, w, (1, 1), (2, 2), (1, 1))
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    gy = torch.randn(y.shape, generator=g).contiguous(memory_format=torch.channels_last)
    gx = lkt.depthwise_grad_input(gy, w, x.shape, (1, 1), (2, 2), (1, 1))
    assert gx.is_contiguous(memory_format=torch.channels_last)
    gw_det = lkt.depthwise_grad_weight(x, gy, (5, 5), (1, 1), (2, 2), (1, 1), deterministic=True)
    gw_fast = lkt.depthwise_grad_weight(x, gy, (5, 5), (1, 1), (2, 2), (1, 1))
    ry, rgx, rgw = reference(x, w, gy, (1, 1), (2, 2), (1, 1))
    assert_close(y, ry, torch.float32, "forward")
    assert_close(gx, rgx, torch.float32, "grad_input")
    assert_close(gw_det, rgw, torch.float32, "grad_weight deterministic")
    assert_close(gw_fast, rgw, torch.float32, "grad_weight atomics")
    again = lkt.depthwise_grad_weight(x, gy, (5, 5), (1, 1), (2, 2), (1, 1), deterministic=True)
    assert torch.equal(gw_det, again)


def test_empty_batch():
    x, w = torch.randn(0, 3, 5, 5), torch.randn(6, 1, 3, 3)
    y = lkt.depthwise_forward(x, w, (1, 1), (1, 1), (1, 1))
    assert y.shape == (0, 6, 5, 5)
    assert lkt.depthwise_grad_input(y, w, x.shape, (1, 1), (1, 1), (1, 1)).shape == x.shape
    gw = lkt.depthwise_grad_weight(x, y, (3, 3), (1, 1), (1, 1), (1, 1))
    assert gw.shape == w.shape and not gw.any()


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape,kernel,padding,dtype",
    [
        ((1, 2, 5, 7), (63, 63), (31, 31), torch.float32),  # 2-D K=63 on a map far smaller than K
        ((1, 2, 6, 9), (64, 62), (32, 31), torch.bfloat16),  # even 2-D kernels
        ((1, 2, 40), (4095,), (2047,), torch.float32),  # 1-D K=4095
    ],
)
def test_very_large_kernels(shape, kernel, padding, dtype):
    nd = len(kernel)
    _check(shape, 1, kernel, (1,) * nd, padding, (1,) * nd, dtype)


def test_long_1d_kernel_default_suite():
    """A long 1-D kernel (K=255, more taps than inputs) stays in the default suite."""
    _check((1, 3, 40), 1, (255,), (1,), (127,), (1,), torch.float32, "transposed")
