"""Tests for largekernel.nn.long_conv.LongConv."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largekernel.nn.long_conv import LongConv, squash
from nn_helpers import single_thread  # noqa: F401  (autouse fixture)

f64 = torch.float64


def reference(u: torch.Tensor, k_fwd: torch.Tensor, k_bwd: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
    """Direct float64 sums, one output at a time (numpy)."""
    u_np, kf = u.detach().double().numpy(), k_fwd.detach().double().numpy()
    kb = None if k_bwd is None else k_bwd.detach().double().numpy()
    n, c, t = u_np.shape
    out = np.zeros_like(u_np)
    for i in range(t):
        for j in range(min(i + 1, kf.shape[-1])):
            out[..., i] += kf[:, j] * u_np[..., i - j]
        if kb is not None:
            for j in range(min(t - i - 1, kb.shape[-1])):
                out[..., i] += kb[:, j] * u_np[..., i + 1 + j]
    return torch.from_numpy(out) + d.detach()[:, None] * u.detach()


def test_squash_matches_definition():
    k = torch.tensor([-1.0, -0.2, -0.05, 0.0, 0.05, 0.2, 1.0], dtype=f64)
    expected = torch.tensor([-0.9, -0.1, 0.0, 0.0, 0.0, 0.1, 0.9], dtype=f64)
    torch.testing.assert_close(squash(k, 0.1), expected)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [17, 30, 45])
def test_long_conv_fft_direct_reference_agree(causal, length):
    torch.manual_seed(0)
    op = LongConv(3, seq_len=30, causal=causal, squash_lambda=0.05, dtype=f64)
    u = torch.randn(2, 3, length, dtype=f64)
    k = op.kernel()[..., :length]
    ref = reference(u, k[0], None if causal else k[1], op.D)
    op.mode = "fft"
    torch.testing.assert_close(op(u), ref)
    op.mode = "direct"
    torch.testing.assert_close(op(u), ref)


def test_squash_is_applied_in_forward():
    torch.manual_seed(0)
    op = LongConv(2, seq_len=20, squash_lambda=0.1, dtype=f64)
    with torch.no_grad():
        op.weight.copy_(torch.linspace(-0.3, 0.3, 40, dtype=f64).reshape(1, 2, 20))
    k = op.kernel()
    torch.testing.assert_close(k, torch.sign(op.weight) * (op.weight.abs() - 0.1).clamp_min(0))
    assert (k == 0).any()
    # gradient of zeroed taps is exactly zero (soft threshold)
    op(torch.randn(1, 2, 20, dtype=f64)).sum().backward()
    assert torch.all(op.weight.grad[k == 0] == 0)
    off = LongConv(2, seq_len=20, squash_lambda=0.0)
    torch.testing.assert_close(off.kernel(), off.weight)


@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_long_conv_causal(mode):
    torch.manual_seed(0)
    op = LongConv(2, seq_len=50, mode=mode)
    u = torch.randn(1, 2, 50)
    v = u.clone()
    v[..., 25:] = 5 * torch.randn(1, 2, 25)
    torch.testing.assert_close(op(u)[..., :25], op(v)[..., :25])
    acausal = LongConv(2, seq_len=50, causal=False, mode=mode)
    assert not torch.allclose(acausal(u)[..., :25], acausal(v)[..., :25])


@pytest.mark.parametrize("causal", [True, False])
def test_long_conv_gradcheck(causal):
    torch.manual_seed(0)
    op = LongConv(2, seq_len=8, causal=causal, squash_lambda=0.01, dtype=f64)
    with torch.no_grad():  # keep weights away from the threshold kinks
        op.weight.copy_(torch.sign(op.weight) * (op.weight.abs() + 0.1))
    u = torch.randn(1, 2, 8, dtype=f64, requires_grad=True)
    names = [n for n, _ in op.named_parameters()]
    for mode in ("fft", "direct"):
        op.mode = mode

        def fn(u, *params):
            return torch.func.functional_call(op, dict(zip(names, params)), (u,))

        assert torch.autograd.gradcheck(fn, (u, *op.parameters()), fast_mode=True)


@pytest.mark.parametrize("causal", [True, False])
def test_long_conv_parameter_count(causal):
    op = LongConv(7, seq_len=123, causal=causal, device="meta")
    assert sum(p.numel() for p in op.parameters()) == (1 if causal else 2) * 7 * 123 + 7


def test_long_conv_kernel_dropout_only_in_training():
    torch.manual_seed(0)
    op = LongConv(4, seq_len=64, squash_lambda=0.0, dropout=0.5)
    assert (op.kernel() == 0).float().mean() > 0.2
    op.eval()
    torch.testing.assert_close(op.kernel(), op.weight)


@pytest.mark.parametrize("causal", [True, False])
def test_long_conv_reparameterize_exact(causal):
    torch.manual_seed(0)
    op = LongConv(3, seq_len=32, causal=causal, dropout=0.3, dtype=f64).eval()
    u = torch.randn(2, 3, 32, dtype=f64)
    y = op(u)
    op.train()
    op.reparameterize()
    op.eval()
    assert not hasattr(op, "weight") or "weight" not in dict(op.named_parameters())
    torch.testing.assert_close(op(u), y, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"channels": 0}, "channels"),
        ({"seq_len": 0}, "seq_len"),
        ({"squash_lambda": -0.1}, "squash_lambda"),
        ({"dropout": 1.5}, "dropout"),
        ({"mode": "fast"}, "mode"),
    ],
)
def test_long_conv_bad_arguments(kwargs, name):
    args = {"channels": 2, "seq_len": 8, **kwargs}
    with pytest.raises(ValueError, match=name):
        LongConv(**args)
    with pytest.raises(ValueError, match="input"):
        LongConv(2, 8)(torch.randn(1, 3, 8))


def test_long_conv_device_dtype():
    op = LongConv(2, 16, device="cpu", dtype=f64)
    assert op.weight.dtype == f64 and op.D.dtype == f64
    assert op(torch.randn(1, 2, 16, dtype=f64)).dtype == f64
