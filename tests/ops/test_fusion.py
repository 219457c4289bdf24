"""The kernel algebra of ops/fusion.py, checked against running the unfused ops in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from largekernel.ops.fusion import dilate_kernel, fuse_conv_bn, identity_kernel, pad_kernel_to

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _random_bn(ndim: int, channels: int, dtype: torch.dtype) -> nn.Module:
    bn = BN[ndim](channels).to(dtype).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fuse_conv_bn_matches_conv_then_bn(ndim, with_bias):
    torch.manual_seed(0)
    c = 4
    x = torch.randn((2, c) + (7,) * ndim, dtype=torch.float64)
    w = torch.randn((c, 1) + (3,) * ndim, dtype=torch.float64)
    b = torch.randn(c, dtype=torch.float64) if with_bias else None
    bn = _random_bn(ndim, c, torch.float64)
    expected = bn(CONV[ndim](x, w, b, padding=1, groups=c))
    fw, fb = fuse_conv_bn(w, b, bn)
    got = CONV[ndim](x, fw, fb, padding=1, groups=c)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fuse_conv_bn_low_precision_keeps_dtype(dtype):
    bn = _random_bn(2, 3, dtype)
    w = torch.randn(3, 1, 3, 3, dtype=dtype)
    fw, fb = fuse_conv_bn(w, None, bn)
    assert fw.dtype == dtype and fb.dtype == dtype
    ref_w, ref_b = fuse_conv_bn(w.double(), None, _copy_bn(bn, torch.float64))
    torch.testing.assert_close(fw.double(), ref_w, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fb.double(), ref_b, rtol=1e-2, atol=1e-2)


def _copy_bn(bn, dtype):
    new = type(bn)(bn.num_features).to(dtype).eval()
    new.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in bn.state_dict().items()})
    return new


def test_fuse_conv_bn_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="output channels"):
        fuse_conv_bn(torch.randn(4, 1, 3, 3), None, nn.BatchNorm2d(5).eval())


@settings(max_examples=25, deadline=None)
@given(
    ndim=st.integers(1, 3),
    k=st.integers(1, 4),
    r=st.integers(1, 4),
    size=st.integers(1, 9),
)
def test_dilated_kernel_equals_dilated_conv(ndim, k, r, size):
    """conv(x, w, dilation=r) == conv(x, dilate_kernel(w, r)) for any input size, incl. smaller than the kernel."""
    c = 2
    torch.manual_seed(k * 100 + r)
    w = torch.randn((c, 1) + (k,) * ndim, dtype=torch.float64)
    x = torch.randn((1, c) + (size,) * ndim, dtype=torch.float64)
    pad = r * (k - 1)  # full padding: every output is defined even for tiny inputs
    expected = CONV[ndim](x, w, padding=pad, dilation=r, groups=c)
    dense = dilate_kernel(w, r)
    assert dense.shape[2:] == (r * (k - 1) + 1,) * ndim
    got = CONV[ndim](x, dense, padding=pad, groups=c)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dilate_kernel_keeps_dtype(dtype):
    assert dilate_kernel(torch.ones(2, 1, 3, 3, dtype=dtype), 2).dtype == dtype


def test_pad_kernel_to_same_output_for_same_padding():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 10, 11, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 5, dtype=torch.float64)
    expected = F.conv2d(x, w, padding=(1, 2), groups=3)
    padded = pad_kernel_to(w, (7, 9))
    torch.testing.assert_close(F.conv2d(x, padded, padding=(3, 4), groups=3), expected)


def test_pad_kernel_to_rejects_off_centre_and_shrinking():
    with pytest.raises(ValueError, match="cannot centre"):
        pad_kernel_to(torch.ones(1, 1, 3, 3), 6)
    with pytest.raises(ValueError, match="cannot centre"):
        pad_kernel_to(torch.ones(1, 1, 5, 5), 3)
    with pytest.raises(ValueError, match="size must be"):
        pad_kernel_to(torch.ones(1, 1, 3, 3), (5, 5, 5))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_identity_kernel_is_identity(ndim):
    x = torch.randn((2, 3) + (6,) * ndim)
    k = identity_kernel(3, 5, ndim)
    torch.testing.assert_close(CONV[ndim](x, k, padding=2, groups=3), x)
    with pytest.raises(ValueError, match="odd"):
        identity_kernel(3, 4, ndim)
