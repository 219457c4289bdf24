"""Tests for SGConv, SGConvBlock, SGConv2d and the FFT helpers in largekernel.nn.sgconv."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.sgconv import (
    SGConv,
    SGConv2d,
    SGConvBlock,
    fft_correlate,
    long_conv1d,
    next_fast_len,
    sgconv_num_scales,
)
from nn_helpers import single_thread  # noqa: F401  (autouse fixture)

f64 = torch.float64


def reference_long_conv(u: torch.Tensor, k_fwd: torch.Tensor, k_bwd: torch.Tensor | None) -> torch.Tensor:
    """Independent float64 reference: an explicit Toeplitz matrix per channel (numpy)."""
    u_np = u.detach().double().numpy()
    kf = k_fwd.detach().double().numpy()
    kb = None if k_bwd is None else k_bwd.detach().double().numpy()
    n, c, t = u_np.shape
    out = np.zeros_like(u_np)
    for ch in range(c):
        mat = np.zeros((t, t))
        for i in range(t):
            for s in range(t):
                lag = i - s
                if 0 <= lag < kf.shape[-1]:
                    mat[i, s] = kf[ch, lag]
                elif kb is not None and lag < 0 and -lag - 1 < kb.shape[-1]:
                    mat[i, s] = kb[ch, -lag - 1]
        out[:, ch] = u_np[:, ch] @ mat.T
    return torch.from_numpy(out)


def test_next_fast_len_matches_brute_force():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 300):
        expected = next(m for m in range(n, 10 * n + 2) if smooth(m))
        assert next_fast_len(n) == expected
    with pytest.raises(ValueError, match="n must be"):
        next_fast_len(0)


@pytest.mark.parametrize("groups,cin,cout", [(1, 3, 4), (2, 4, 6), (5, 5, 5)])
def test_fft_correlate_matches_conv1d_and_conv2d(groups, cin, cout):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, cin, 23, generator=g, dtype=f64)
    w1 = torch.randn(cout, cin // groups, 7, generator=g, dtype=f64)
    torch.testing.assert_close(fft_correlate(x1, w1, groups), F.conv1d(x1, w1, groups=groups))
    x2 = torch.randn(2, cin, 11, 9, generator=g, dtype=f64)
    w2 = torch.randn(cout, cin // groups, 4, 5, generator=g, dtype=f64)
    torch.testing.assert_close(fft_correlate(x2, w2, groups), F.conv2d(x2, w2, groups=groups))
    # one kernel per sample
    wp = torch.randn(2, cout, cin // groups, 4, 5, generator=g, dtype=f64)
    per_sample = torch.stack([F.conv2d(x2[i : i + 1], wp[i], groups=groups)[0] for i in range(2)])
    torch.testing.assert_close(fft_correlate(x2, wp, groups), per_sample)


def test_fft_correlate_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x must be"):
        fft_correlate(torch.randn(2, 3), torch.randn(3, 1, 2))
    with pytest.raises(ValueError, match="larger than"):
        fft_correlate(torch.randn(1, 1, 4), torch.randn(1, 1, 5))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length", [37, 50, 61])
def test_sgconv_fft_direct_reference_agree(bidirectional, length):
    torch.manual_seed(0)
    op = SGConv(3, seq_len=50, kernel_dim=8, bidirectional=bidirectional, dtype=f64)
    u = torch.randn(2, 3, length, dtype=f64)
    op.mode = "fft"
    y_fft = op(u)
    op.mode = "direct"
    y_direct = op(u)
    k = op.kernel()[..., :length]
    y_ref = reference_long_conv(u, k[0], k[1] if bidirectional else None) + op.D[:, None].detach() * u
    torch.testing.assert_close(y_fft, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(y_direct, y_ref, atol=1e-10, rtol=1e-10)
    assert y_fft.shape == (2, 3, length)


def test_sgconv_float32_close_to_float64():
    torch.manual_seed(1)
    op = SGConv(4, seq_len=300, kernel_dim=16)
    u = torch.randn(2, 4, 300)
    y32 = op(u)
    op64 = SGConv(4, seq_len=300, kernel_dim=16, dtype=f64)
    op64.load_state_dict({k: v.double() for k, v in op.state_dict().items()})
    op64.mode = "direct"
    torch.testing.assert_close(y32.double(), op64(u.double()), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_sgconv_is_causal(mode):
    torch.manual_seed(0)
    op = SGConv(2, seq_len=64, kernel_dim=8, mode=mode)
    u = torch.randn(1, 2, 64)
    v = u.clone()
    v[..., 40:] = torch.randn(1, 2, 24) * 10
    y_u, y_v = op(u), op(v)
    torch.testing.assert_close(y_u[..., :40], y_v[..., :40])
    assert not torch.allclose(y_u[..., 40:], y_v[..., 40:])


def test_sgconv_bidirectional_sees_future():
    torch.manual_seed(0)
    op = SGConv(2, seq_len=64, kernel_dim=8, bidirectional=True)
    u = torch.randn(1, 2, 64)
    v = u.clone()
    v[..., 40:] += 1.0
    assert not torch.allclose(op(u)[..., :40], op(v)[..., :40])


@pytest.mark.parametrize("mode", ["fft", "direct"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sgconv_gradcheck(mode, bidirectional):
    torch.manual_seed(0)
    op = SGConv(2, seq_len=12, kernel_dim=4, bidirectional=bidirectional, mode=mode, dtype=f64)
    u = torch.randn(1, 2, 10, dtype=f64, requires_grad=True)
    params = tuple(op.parameters())

    def fn(u, *params):
        return torch.func.functional_call(op, dict(zip([n for n, _ in op.named_parameters()], params)), (u,))

    assert torch.autograd.gradcheck(fn, (u, *params), fast_mode=True)


@pytest.mark.parametrize("seq_len,kernel_dim", [(1024, 64), (1000, 64), (64, 64), (10, 64), (4096, 32), (129, 8)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sgconv_parameter_count_formula(seq_len, kernel_dim, bidirectional):
    op = SGConv(2, seq_len=seq_len, kernel_dim=kernel_dim, bidirectional=bidirectional, device="meta")
    scales = 1 + max(0, math.ceil(math.log2(seq_len / kernel_dim)))
    assert op.num_scales == scales == sgconv_num_scales(seq_len, kernel_dim)
    directions = 2 if bidirectional else 1
    expected = directions * scales * 2 * kernel_dim + 2
    assert sum(p.numel() for p in op.parameters()) == expected
    # the concatenated kernel always covers the sequence
    assert kernel_dim * 2 ** (scales - 1) >= seq_len


def test_sgconv_parameters_grow_logarithmically():
    counts = [sum(p.numel() for p in SGConv(1, 64 * 2**j, 64, device="meta").parameters()) for j in range(6)]
    # doubling L adds exactly one sub-kernel of d taps (plus nothing else)
    assert [b - a for a, b in zip(counts, counts[1:])] == [64] * 5


def test_sgconv_kernel_structure():
    torch.manual_seed(0)
    d, length, alpha = 4, 32, 3.0
    op = SGConv(2, seq_len=length, kernel_dim=d, alpha=alpha, dtype=f64)
    s = op.num_scales  # 1 + log2(8) = 4: segments d, d, 2d, 4d = 32 taps
    assert s == 4
    k = op.kernel()[0].detach().numpy()
    norm = op.kernel_norm[0].numpy()  # (C, 1)
    pieces = []
    for i, sub in enumerate(op.sub_kernels):
        factor = 2 ** max(0, i - 1)
        src = sub[0].detach().numpy()
        # linear upsampling with half-pixel centres, edges clamped (np.interp clamps)
        pos = (np.arange(d * factor) + 0.5) / factor - 0.5
        up = np.stack([np.interp(pos, np.arange(d), src[c]) for c in range(2)])
        pieces.append(up * alpha ** (s - 1 - i))
    expected = np.concatenate(pieces, axis=-1) / norm
    np.testing.assert_allclose(k, expected, atol=1e-12)
    # the normaliser was computed once from the initial kernel: unit norm now
    np.testing.assert_allclose(np.linalg.norm(k, axis=-1), 1.0, atol=1e-12)


def test_sgconv_norm_buffer_is_frozen_during_training():
    torch.manual_seed(0)
    op = SGConv(2, seq_len=32, kernel_dim=4)
    before = op.kernel_norm.clone()
    assert "kernel_norm" in dict(op.named_buffers())
    opt = torch.optim.SGD(op.parameters(), lr=1.0)
    op(torch.randn(2, 2, 32)).pow(2).sum().backward()
    opt.step()
    torch.testing.assert_close(op.kernel_norm, before)
    assert not torch.allclose(op.kernel().norm(dim=-1), torch.ones(1, 2))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sgconv_reparameterize_exact(bidirectional):
    torch.manual_seed(0)
    op = SGConv(3, seq_len=40, kernel_dim=8, bidirectional=bidirectional, dtype=f64).eval()
    u = torch.randn(2, 3, 33, dtype=f64)
    y = op(u)
    op.reparameterize()
    assert op.deployed and not hasattr(op, "sub_kernels")
    assert sum(p.numel() for p in op.parameters()) == 3  # only D remains trainable
    torch.testing.assert_close(op(u), y, atol=0, rtol=0)
    op.reparameterize()  # idempotent
    torch.testing.assert_close(op(u), y, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"channels": 0, "seq_len": 8}, "channels"),
        ({"channels": 2, "seq_len": -1}, "seq_len"),
        ({"channels": 2, "seq_len": 8, "kernel_dim": 0}, "kernel_dim"),
        ({"channels": 2, "seq_len": 8, "alpha": 0.0}, "alpha"),
        ({"channels": 2, "seq_len": 8, "mode": "spectral"}, "mode"),
        ({"channels": 2.5, "seq_len": 8}, "channels"),
    ],
)
def test_sgconv_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SGConv(**kwargs)


def test_sgconv_bad_input():
    op = SGConv(3, seq_len=16, kernel_dim=4)
    with pytest.raises(ValueError, match=r"\(N, 3, T\)"):
        op(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="input"):
        op(torch.randn(3, 16))


def test_sgconv_device_dtype_kwargs():
    op = SGConv(2, seq_len=16, kernel_dim=4, device="cpu", dtype=f64)
    assert all(p.dtype == f64 and p.device.type == "cpu" for p in op.parameters())
    assert op.kernel_norm.dtype == f64
    assert op(torch.randn(1, 2, 16, dtype=f64)).dtype == f64
    meta = SGConv(2, seq_len=16, kernel_dim=4, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_long_conv1d_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        long_conv1d(torch.randn(1, 1, 4), torch.randn(1, 4), mode="bad")


def test_sgconv_block():
    torch.manual_seed(0)
    block = SGConvBlock(4, seq_len=64, kernel_dim=8, dropout=0.5)
    u = torch.randn(2, 4, 50)
    assert block(u).shape == (2, 4, 50)
    block.eval()
    torch.testing.assert_close(block(u), block(u))
    expected = block.proj(F.gelu(block.conv(u)).transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(block(u), expected)
    with pytest.raises(ValueError, match="dropout"):
        SGConvBlock(4, seq_len=8, dropout=1.0)


# ----------------------------------------------------------------------------- SGConv2d


@pytest.mark.parametrize("size", [(9, 9), (10, 7), (6, 13)])
def test_sgconv2d_fft_direct_reference_agree(size):
    torch.manual_seed(0)
    op = SGConv2d(3, size=size, kernel_dim=3, dtype=f64)
    assert op.kernel_size == (size[0] | 1, size[1] | 1)
    x = torch.randn(2, 3, *size, dtype=f64)
    op.mode = "fft"
    y_fft = op(x)
    op.mode = "direct"
    y_direct = op(x)
    k = op.kernel().detach()
    ref = F.conv2d(x, k, padding=(k.shape[-2] // 2, k.shape[-1] // 2), groups=3) + op.D.detach()[:, None, None] * x
    torch.testing.assert_close(y_fft, ref)
    torch.testing.assert_close(y_direct, ref)
    assert y_fft.shape == x.shape


def test_sgconv2d_global_receptive_field():
    torch.manual_seed(0)
    op = SGConv2d(1, size=12, kernel_dim=3, dtype=f64)
    x = torch.zeros(1, 1, 12, 12, dtype=f64, requires_grad=True)
    op(x)[0, 0, 6, 6].backward()
    # the centre output depends on (almost) every input pixel
    assert (x.grad.abs() > 0).float().mean() > 0.9


def test_sgconv2d_gradcheck():
    torch.manual_seed(0)
    op = SGConv2d(2, size=(5, 4), kernel_dim=2, mode="fft", dtype=f64)
    x = torch.randn(1, 2, 5, 4, dtype=f64, requires_grad=True)
    names = [n for n, _ in op.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(op, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *op.parameters()), fast_mode=True)


@pytest.mark.parametrize("size,d", [((56, 56), 8), ((14, 30), 4), ((7, 7), 8)])
def test_sgconv2d_parameter_count_formula(size, d):
    op = SGConv2d(5, size=size, kernel_dim=d, device="meta")
    k = max(s | 1 for s in size)
    scales = 1 + max(0, math.ceil(math.log2(k / d)))
    assert sum(p.numel() for p in op.parameters()) == scales * 5 * d * d + 5


def test_sgconv2d_reparameterize_and_args():
    torch.manual_seed(0)
    op = SGConv2d(2, size=8, kernel_dim=2, dtype=f64)
    x = torch.randn(1, 2, 8, 8, dtype=f64)
    y = op(x)
    op.reparameterize()
    assert not hasattr(op, "sub_kernels")
    torch.testing.assert_close(op(x), y, atol=0, rtol=0)
    for kwargs, name in [
        ({"size": (0, 4)}, "size"),
        ({"size": (4, 4, 4)}, "size"),
        ({"size": 4, "kernel_dim": -2}, "kernel_dim"),
        ({"size": 4, "alpha": -1.0}, "alpha"),
        ({"size": 4, "mode": "x"}, "mode"),
    ]:
        with pytest.raises(ValueError, match=name):
            SGConv2d(2, **kwargs)
    with pytest.raises(ValueError, match="input"):
        SGConv2d(2, size=4)(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_sgconv_bfloat16_close_to_float32(mode):
    torch.manual_seed(0)
    op = SGConv(4, seq_len=128, kernel_dim=16, mode=mode)
    u = torch.randn(2, 4, 128)
    ref = op(u)
    y = op.to(torch.bfloat16)(u.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() <= 3e-2 * ref.abs().max()
