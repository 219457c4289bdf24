"""ReparamLargeKernelConv and ConvBN: defaults, explicit padding, and half-precision fusion rounding.

The fused half-precision kernel must be the float64 fusion of the half-precision parameters,
rounded *once* to the half dtype: fusion arithmetic (BN folding and the sum of both branches)
runs in float32, so summing already-rounded half kernels (a second rounding) is a bug visible
as a 1-ulp error on the taps both branches share.
"""

from __future__ import annotations


import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.replk_conv import ConvBN, ReparamLargeKernelConv
from nn_helpers import randomise_bns
from rounding_helpers import assert_half_fusion_rounds_once


def _bn64(y, bn):
    s = (1, -1, 1, 1)
    stats = [t.double().view(s) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias)]
    return (y - stats[0]) / (stats[1] + bn.eps).sqrt() * stats[2] + stats[3]


def test_convbn_defaults_are_stride_1_same_padding_dense():
    torch.manual_seed(0)
    m = ConvBN(3, 5, 3)  # 3 channels: any other default for groups would not divide them
    randomise_bns(m)
    m.eval()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    m = m.double()
    assert m.conv.weight.shape == (5, 3, 3, 3) and m.conv.bias is None
    with torch.no_grad():
        ref = _bn64(F.conv2d(x, m.conv.weight, None, 1, 1), m.bn)
        torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding,size", [(0, (3, 2)), (2, (7, 6)), (None, (5, 4))])
def test_convbn_explicit_padding_is_used(padding, size):
    m = ConvBN(2, 2, 3, padding=padding, groups=2).eval()
    assert m.conv.weight.shape == (2, 1, 3, 3)
    with torch.no_grad():
        assert tuple(m(torch.randn(1, 2, 5, 4)).shape[2:]) == size


def test_default_stride_is_one():
    m = ReparamLargeKernelConv(4, 4, 7, small_kernel=3).eval()
    assert m.stride == 1
    with torch.no_grad():
        assert m(torch.randn(1, 4, 9, 8)).shape == (1, 4, 9, 8)
    d = ReparamLargeKernelConv(4, 4, 7, deploy=True)
    assert d.lkb_reparam.stride == (1, 1) and d.lkb_reparam.padding == (3, 3)


def _fused64(m: ReparamLargeKernelConv):
    """Merged kernel and bias in float64 from the module's own (possibly half) parameters.

    Also returns the sums of the magnitudes of the terms: the scale of float32's own rounding
    (where the branches nearly cancel, that is larger than the result itself).
    """
    def fold(cb):
        bn = cb.bn
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        mean = bn.running_mean.double() * scale
        return cb.conv.weight.double() * scale.view(-1, 1, 1, 1), bn.bias.double() - mean, bn.bias.double().abs() + mean.abs()

    k, b, mb = fold(m.lkb_origin)
    mk = k.abs()
    if m.small_kernel is not None:
        sk, sb, smb = fold(m.small_conv)
        p = (m.kernel_size - m.small_kernel) // 2
        k = k + F.pad(sk, [p, p, p, p])
        mk = mk + F.pad(sk.abs(), [p, p, p, p])
        b, mb = b + sb, mb + smb
    return k, b, mk, mb


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_fusion_rounds_once(dtype):
    torch.manual_seed(1)
    m = ReparamLargeKernelConv(8, 8, 9, small_kernel=7)
    randomise_bns(m, seed=3)
    assert_half_fusion_rounds_once(m.to(dtype).eval(), _fused64, lambda fused: fused.lkb_reparam)


@pytest.mark.parametrize("kwargs,name", [
    (dict(in_channels=0), "in_channels"), (dict(in_channels=-4), "in_channels"), (dict(in_channels=4.0), "in_channels"),
    (dict(in_channels=True, out_channels=1, groups=1), "in_channels"),
    (dict(out_channels=0), "out_channels"), (dict(out_channels=-4), "out_channels"),
    (dict(out_channels="4"), "out_channels"), (dict(out_channels=True, in_channels=1, groups=1), "out_channels"),
    (dict(stride=0), "stride"), (dict(stride=-1), "stride"), (dict(stride=1.0), "stride"), (dict(stride=True), "stride"),
    (dict(kernel_size=0), "kernel_size"), (dict(kernel_size=-3), "kernel_size"), (dict(kernel_size=8), "kernel_size"),
    (dict(kernel_size=7.0), "kernel_size"),
    (dict(groups=0), "groups"), (dict(groups=-2), "groups"), (dict(groups=2.0), "groups"),
    (dict(in_channels=4, out_channels=6, groups=4), "groups"),  # divides in_channels only
    (dict(in_channels=6, out_channels=4, groups=4), "groups"),  # divides out_channels only
    (dict(small_kernel=0), "small_kernel"), (dict(small_kernel=-1), "small_kernel"),
    (dict(small_kernel=4), "small_kernel"), (dict(small_kernel=9), "small_kernel"), (dict(small_kernel=3.0), "small_kernel"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(in_channels=4, out_channels=4, kernel_size=7) | kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        ReparamLargeKernelConv(**args)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=1), dict(kernel_size=1, small_kernel=1), dict(small_kernel=7), dict(small_kernel=1),
    dict(in_channels=1, out_channels=1), dict(in_channels=2, out_channels=6, groups=2), dict(groups=1),
])
def test_edge_arguments_are_accepted(kwargs):
    args = dict(in_channels=4, out_channels=4, kernel_size=7) | kwargs
    m = ReparamLargeKernelConv(**args)
    randomise_bns(m)
    m.eval()
    x = torch.randn(1, args["in_channels"], 6, 5)
    with torch.no_grad():
        y = m(x)
        m.reparameterize()
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
    assert y.shape == (1, args["out_channels"], 6, 5)


@pytest.mark.parametrize("stride", [1, 2])
def test_deploy_form_built_directly_matches_the_merged_training_form(stride):
    torch.manual_seed(stride)
    m = ReparamLargeKernelConv(4, 6, 9, stride=stride, groups=2, small_kernel=3, dtype=torch.float64)
    randomise_bns(m, seed=stride)
    m.eval()
    d = ReparamLargeKernelConv(4, 6, 9, stride=stride, groups=2, small_kernel=3, deploy=True, dtype=torch.float64)
    conv = d.lkb_reparam
    assert conv.weight.dtype == torch.float64 and conv.bias is not None and conv.bias.dtype == torch.float64
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((9, 9), (stride,) * 2, (4, 4), 2)
    x = torch.randn(2, 4, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        m.reparameterize()
        d.load_state_dict(m.state_dict())
        torch.testing.assert_close(d(x), y, rtol=1e-12, atol=1e-12)
    k, b = d.get_kernel_bias()
    assert k is conv.weight and b is conv.bias
