import io

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from largekernel.nn.ls_conv import LKP, ConvBN, LSConv, ska, ska_taps, ska_unfold

D = torch.float64


def ska_loops(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Direct transcription of the SKA formula (independent of both implementations)."""
    n, c, h, wd = x.shape
    m, kk = w.shape[1], w.shape[2]
    k = int(kk**0.5)
    p = (k - 1) // 2
    xp = F.pad(x, (p, p, p, p))
    y = torch.zeros_like(x)
    for ch in range(c):
        g = ch % m
        for a in range(k):
            for b in range(k):
                y[:, ch] += xp[:, ch, a : a + h, b : b + wd] * w[:, g, a * k + b]
    return y


def randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("k,m,g", [(3, 2, 3), (5, 4, 1), (1, 3, 2)])
def test_ska_impls_match_direct_formula(k, m, g):
    gen = torch.Generator().manual_seed(k + m)
    x = torch.randn(2, m * g, 5, 7, generator=gen, dtype=D)
    w = torch.randn(2, m, k * k, 5, 7, generator=gen, dtype=D)
    ref = ska_loops(x, w)
    torch.testing.assert_close(ska_unfold(x, w), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ska_taps(x, w), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ska(x, w, "auto"), ref, rtol=1e-12, atol=1e-12)


def test_ska_interleaved_sharing():
    # only weight group 1 is non-zero -> only channels c with c mod M == 1 respond
    x = torch.randn(1, 12, 4, 4, dtype=D)
    w = torch.zeros(1, 4, 9, 4, 4, dtype=D)
    w[:, 1] = 1.0
    y = ska_taps(x, w)
    active = [c for c in range(12) if y[0, c].abs().sum() > 0]
    assert active == [1, 5, 9]
    torch.testing.assert_close(ska_unfold(x, w), y)


def test_ska_gradcheck_both_impls():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 3, generator=gen, dtype=D, requires_grad=True)
    w = torch.randn(1, 2, 9, 2, 3, generator=gen, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(ska_unfold, (x, w))
    assert torch.autograd.gradcheck(ska_taps, (x, w))


def test_ska_bad_arguments():
    x = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match="multiple of the weight groups"):
        ska(x, torch.randn(1, 4, 9, 4, 4))
    with pytest.raises(ValueError, match="k\\*k"):
        ska(x, torch.randn(1, 2, 8, 4, 4))
    with pytest.raises(ValueError, match="spatial"):
        ska(x, torch.randn(1, 2, 9, 3, 4))
    with pytest.raises(ValueError, match="impl"):
        ska(x, torch.randn(1, 2, 9, 4, 4), impl="triton")


def test_lsconv_matches_hand_composition():
    """Output == BN(SKA(x, LKP(x))) + x, with LKP rebuilt from F ops."""
    torch.manual_seed(0)
    m = LSConv(16, large_kernel=5, small_kernel=3, groups=4).to(D).eval()
    randomize_bn(m, torch.Generator().manual_seed(1))
    x = torch.randn(2, 16, 6, 9, dtype=D)
    lkp = m.lkp

    def cbn(mod, t, groups=1, pad=0):
        bn = mod.bn
        t = F.conv2d(t, mod.conv.weight, None, 1, pad, 1, groups)
        return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    h = F.relu(cbn(lkp.cv1, x))
    h = F.relu(cbn(lkp.cv3, cbn(lkp.cv2, h, groups=8, pad=2)))
    h = F.conv2d(h, lkp.cv4.weight, lkp.cv4.bias)
    h = F.group_norm(h, 4, lkp.norm.weight, lkp.norm.bias, lkp.norm.eps)
    w = h.view(2, 4, 9, 6, 9)
    bn = m.bn
    ref = F.batch_norm(ska_loops(x, w), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps) + x
    torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-10)


def test_lsconv_impls_agree_and_shapes():
    torch.manual_seed(0)
    m = LSConv(16, groups=8).to(D)
    x = torch.randn(2, 16, 7, 5, dtype=D)
    outs = []
    for impl in ("unfold", "taps", "auto"):
        m.ska_impl = impl
        outs.append(m(x))
    assert outs[0].shape == x.shape
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-12, atol=1e-12)


def test_lsconv_gradcheck_module():
    torch.manual_seed(0)
    m = LSConv(8, large_kernel=3, small_kernel=3, groups=4, ska_impl="taps").to(D).eval()
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(1, 8, 3, 3, dtype=D, requires_grad=True)

    def f(x, *ps):
        return functional_call(m, dict(zip(names, ps)), (x,))

    # fast_mode: random projections instead of one perturbation per parameter element
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def test_lsconv_reparameterize_exact():
    torch.manual_seed(0)
    m = LSConv(16, groups=4).to(D).eval()
    randomize_bn(m, torch.Generator().manual_seed(3))
    x = torch.randn(2, 16, 8, 8, dtype=D)
    before = m(x)
    m.reparameterize()
    m.reparameterize()  # idempotent
    for cb in (m.lkp.cv1, m.lkp.cv2, m.lkp.cv3):
        assert isinstance(cb.bn, nn.Identity) and cb.conv.bias is not None
    torch.testing.assert_close(m(x), before, rtol=1e-10, atol=1e-10)


def test_convbn_reparameterize_keeps_stride_groups():
    torch.manual_seed(0)
    m = ConvBN(6, 6, 3, stride=2, groups=3).to(D).eval()
    randomize_bn(m, torch.Generator().manual_seed(4))
    x = torch.randn(2, 6, 7, 9, dtype=D)
    before = m(x)
    m.reparameterize()
    assert m.conv.stride == (2, 2) and m.conv.groups == 3
    torch.testing.assert_close(m(x), before, rtol=1e-10, atol=1e-10)


def test_lsconv_parameter_count():
    c, kl, ks, g = 32, 7, 3, 8
    h, mgroups = c // 2, c // g
    expected = (
        c * h + 2 * h  # cv1 + BN
        + h * kl * kl + 2 * h  # cv2 (DW) + BN
        + h * h + 2 * h  # cv3 + BN
        + h * ks * ks * mgroups + ks * ks * mgroups  # cv4 with bias
        + 2 * ks * ks * mgroups  # GroupNorm affine
        + 2 * c  # output BN
    )
    assert sum(p.numel() for p in LSConv(c, kl, ks, g).parameters()) == expected


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=15, groups=5), "dim must be even"),
        (dict(dim=16, groups=3), "divisible by groups"),
        (dict(dim=16, large_kernel=6), "large_kernel must be odd"),
        (dict(dim=16, small_kernel=2), "small_kernel must be odd"),
        (dict(dim=16, ska_impl="cuda"), "ska_impl"),
        (dict(dim=0), "dim must be a positive int"),
    ],
)
def test_lsconv_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSConv(**kwargs)


def test_lsconv_bad_input():
    with pytest.raises(ValueError, match="expects input"):
        LSConv(16)(torch.randn(1, 8, 4, 4))


def test_factory_kwargs_and_to():
    m = LSConv(16, device="meta", dtype=D)
    assert all(p.device.type == "meta" and p.dtype == D for p in m.parameters())
    m = LKP(16, dtype=D)
    assert all(p.dtype == D for p in m.parameters())
    m = LSConv(16).to(torch.float64)
    assert m(torch.randn(1, 16, 5, 5, dtype=D)).dtype == D


def test_onnx_export():
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    m = LSConv(16, groups=8).eval()
    x = torch.randn(1, 16, 6, 6)
    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops
    # the numbers, always: onnx's reference evaluator ships with onnx (no silent return)
    from onnx.reference import ReferenceEvaluator

    (out,) = ReferenceEvaluator(model).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), m(x).detach(), rtol=1e-4, atol=1e-4)
