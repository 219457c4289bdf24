"""DilatedReparamConv: half-precision fusion rounding, deploy-form kernels, argument checks, repr.

The fused kernel is checked against an independent float64 fold: each branch's BN folded into its
weight, the dilated taps placed by index arithmetic (tap ``i`` of a ``k``-tap, dilation-``r``
branch lands at ``K//2 + r*(i - k//2)``), never through the library's fusion helpers.
"""

from __future__ import annotations


import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.dilated_reparam import DILATED_BRANCHES, DilatedReparamConv
from nn_helpers import randomise_bns
from rounding_helpers import assert_half_fusion_rounds_once


def _fold64(conv_weight, bn):
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    shift = bn.running_mean.double() * scale
    shape = (-1,) + (1,) * (conv_weight.dim() - 1)
    return conv_weight.double() * scale.view(shape), bn.bias.double() - shift, bn.bias.double().abs() + shift.abs()


def _fused64(m: DilatedReparamConv):
    """Kernel, bias and the magnitude sums of their terms, in float64 (2-D blocks)."""
    K = m.kernel_size
    kernel, bias, mag_b = _fold64(m.lk_origin.weight, m.origin_bn)
    mag_k = kernel.abs()
    for k, r in zip(*DILATED_BRANCHES[K]):
        w, b, mb = _fold64(getattr(m, f"dil_conv_k{k}_{r}").weight, getattr(m, f"dil_bn_k{k}_{r}"))
        pos = [K // 2 + r * (i - k // 2) for i in range(k)]
        for a, pa in enumerate(pos):
            for c, pc in enumerate(pos):
                kernel[:, :, pa, pc] += w[:, :, a, c]
                mag_k[:, :, pa, pc] += w[:, :, a, c].abs()
        bias, mag_b = bias + b, mag_b + mb
    return kernel, bias, mag_k, mag_b


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_fusion_rounds_once(dtype):
    torch.manual_seed(2)
    m = DilatedReparamConv(6, 13)
    randomise_bns(m, seed=5)
    assert_half_fusion_rounds_once(m.to(dtype).eval(), _fused64, lambda fused: fused.lk_origin)


def test_float64_block_fuses_into_a_float64_conv():
    torch.manual_seed(0)
    m = DilatedReparamConv(3, 9, dtype=torch.float64)
    randomise_bns(m, seed=1)
    m.eval()
    ref_k, ref_b, _, _ = _fused64(m)
    m.reparameterize()
    conv = m.lk_origin
    assert conv.weight.dtype == torch.float64 and conv.bias.dtype == torch.float64
    assert (conv.kernel_size, conv.padding, conv.groups) == ((9, 9), (4, 4), 3)
    torch.testing.assert_close(conv.weight, ref_k, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(conv.bias, ref_b, rtol=1e-13, atol=1e-15)
    x = torch.randn(1, 3, 10, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.conv2d(x, ref_k, ref_b, 1, 4, 1, 3), rtol=1e-12, atol=1e-12)


def test_deploy_form_kernel_bias():
    d = DilatedReparamConv(3, 7, deploy=True, dtype=torch.float64)
    k, b = d.get_kernel_bias()
    assert k is d.lk_origin.weight and b is d.lk_origin.bias
    # a deploy conv without a bias (e.g. built by hand) has a zero bias of its dtype
    d.lk_origin.bias = None
    k, b = d.get_kernel_bias()
    assert k is d.lk_origin.weight
    assert b.dtype == torch.float64 and b.shape == (3,) and not b.any()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, k, b, 1, 3, 1, 3), d(x), rtol=1e-12, atol=1e-12)
    # ... on the weight's device (the meta device stands in for an accelerator here)
    meta = DilatedReparamConv(3, 7, deploy=True, device="meta")
    meta.lk_origin.bias = None
    assert meta.get_kernel_bias()[1].device.type == "meta"


@pytest.mark.parametrize("kwargs,name", [
    (dict(channels=0), "channels"), (dict(channels=-2), "channels"), (dict(channels=2.0), "channels"),
    (dict(channels=True), "channels"), (dict(channels="4"), "channels"),
    (dict(kernel_size=13.0), "kernel_size"), (dict(kernel_size="13"), "kernel_size"), (dict(kernel_size=0), "kernel_size"),
    (dict(ndim=0), "ndim"), (dict(ndim=4), "ndim"), (dict(ndim="2"), "ndim"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(channels=4, kernel_size=13) | kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        DilatedReparamConv(**args)


def test_one_channel_and_repr():
    m = DilatedReparamConv(1, 5)
    assert m.lk_origin.weight.shape == (1, 1, 5, 5)
    assert m.extra_repr() == "channels=1, kernel_size=5, ndim=2, deploy=False"
    assert "channels=1, kernel_size=5, ndim=2, deploy=False\n" in repr(m)
    m.eval().reparameterize()
    assert m.extra_repr() == "channels=1, kernel_size=5, ndim=2, deploy=True"
    assert DilatedReparamConv(2, 7, ndim=3, deploy=True).extra_repr() == "channels=2, kernel_size=7, ndim=3, deploy=True"
