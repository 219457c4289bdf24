"""Corner cases of the kernel algebra in ops/fusion.py that test_fusion.py does not reach.

Found by mutation testing (issue 20): BatchNorms without affine parameters or without running
statistics, half-precision fusion accuracy, targets equal to the kernel size, the factory
keywords of ``identity_kernel`` and the argument names in the error messages.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from largekernel.ops.fusion import compute_dtype, dilate_kernel, fuse_conv_bn, identity_kernel, pad_kernel_to


def _randomise(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return bn.eval()


@pytest.mark.parametrize("with_bias", [False, True])
def test_fuse_conv_bn_without_affine_parameters(with_bias):
    """BatchNorm(affine=False) has no gamma/beta: they act as 1 and 0."""
    torch.manual_seed(1)
    c = 3
    bn = _randomise(nn.BatchNorm2d(c, affine=False).double())
    x = torch.randn(2, c, 6, 6, dtype=torch.float64)
    w = torch.randn(c, 1, 3, 3, dtype=torch.float64)
    b = torch.randn(c, dtype=torch.float64) if with_bias else None
    expected = bn(F.conv2d(x, w, b, padding=1, groups=c))
    fw, fb = fuse_conv_bn(w, b, bn)
    torch.testing.assert_close(F.conv2d(x, fw, fb, padding=1, groups=c), expected, rtol=1e-12, atol=1e-12)


def test_fuse_conv_bn_needs_running_statistics():
    bn = nn.BatchNorm2d(4, track_running_stats=False).eval()
    with pytest.raises(ValueError, match=r"^bn must track running statistics to be fused \(track_running_stats=True\)$"):
        fuse_conv_bn(torch.randn(4, 1, 3, 3), None, bn)


def test_fuse_conv_bn_channel_error_names_both_counts():
    with pytest.raises(ValueError, match=r"^bn has 5 features but the conv weight has 4 output channels$"):
        fuse_conv_bn(torch.randn(4, 2, 3, 3), None, nn.BatchNorm2d(5).eval())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fuse_conv_bn_half_precision_is_correctly_rounded(dtype):
    """Fusing in float32 leaves only the final rounding: the fp16/bf16 results are the exact
    (float64) fusion rounded once, for all but a rare double-rounding case. Half-precision
    arithmetic (std, scale or eps in fp16/bf16) misses that for ~30 % of the values."""
    torch.manual_seed(0)
    c = 256
    bn = _randomise(nn.BatchNorm2d(c).to(dtype))
    w = torch.randn(c, 1, 3, 3, dtype=dtype)
    b = torch.randn(c, dtype=dtype)
    fw, fb = fuse_conv_bn(w, b, bn)
    assert fw.dtype == dtype and fb.dtype == dtype
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    ref_w = (w.double() * scale.view(-1, 1, 1, 1)).to(dtype)
    ref_b = (bn.bias.double() + (b.double() - bn.running_mean.double()) * scale).to(dtype)
    assert (fw == ref_w).double().mean() >= 0.99
    assert (fb == ref_b).double().mean() >= 0.99


def test_fuse_conv_bn_float16_intermediate_does_not_overflow():
    """b - mean = 1.2e5 does not fit in float16, the fused bias (1.2e3) does."""
    bn = nn.BatchNorm2d(1).half().eval()
    with torch.no_grad():
        bn.running_mean.fill_(-60000.0)
        bn.running_var.fill_(1e4)
    fw, fb = fuse_conv_bn(torch.ones(1, 1, 1, 1, dtype=torch.float16), torch.full((1,), 60000.0, dtype=torch.float16), bn)
    expected = (60000.0 + 60000.0) / (1e4 + bn.eps) ** 0.5
    assert torch.isfinite(fb).all()
    torch.testing.assert_close(fb.double(), torch.tensor([expected], dtype=torch.float64), rtol=1e-3, atol=0)


def test_compute_dtype_is_float32_except_for_float64():
    assert compute_dtype(torch.float64) == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert compute_dtype(dtype) == torch.float32


def test_dilate_kernel_rejects_wrong_number_of_dilations():
    with pytest.raises(ValueError, match=r"^dilation must be an int or a sequence of 2 ints, got \(1, 2, 3\)$"):
        dilate_kernel(torch.randn(2, 1, 3, 3), (1, 2, 3))


def test_pad_kernel_to_accepts_a_target_equal_in_some_dimensions():
    w = torch.randn(2, 1, 3, 5, dtype=torch.float64)
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    assert torch.equal(pad_kernel_to(w, (3, 5)), w)
    padded = pad_kernel_to(w, (5, 5))
    assert padded.shape == (2, 1, 5, 5)
    torch.testing.assert_close(
        F.conv2d(x, padded, padding=2, groups=2), F.conv2d(x, w, padding=(1, 2), groups=2), rtol=1e-12, atol=1e-12
    )


def test_identity_kernel_defaults_to_2d_and_keeps_factory_kwargs():
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    k = identity_kernel(3, 3, dtype=torch.float64)
    assert k.shape == (3, 1, 3, 3) and k.dtype == torch.float64
    torch.testing.assert_close(F.conv2d(x, k, padding=1, groups=3), x, rtol=0, atol=0)
    meta = identity_kernel(3, 5, ndim=1, device="meta")
    assert meta.device.type == "meta" and meta.shape == (3, 1, 5)


def test_identity_kernel_rejects_wrong_number_of_sizes():
    with pytest.raises(ValueError, match=r"^kernel_size must be an int or a sequence of 2 ints, got \(3, 3, 3\)$"):
        identity_kernel(2, (3, 3, 3))
