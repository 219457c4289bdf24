import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from largekernel.nn.cp_conv import CPConv1d, CPConv2d, CPConv3d, CPDepthwiseConv2d, cp_als

D = torch.float64
CLASSES = {1: CPConv1d, 2: CPConv2d, 3: CPConv3d}
FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def loop_weight_2d(m: CPConv2d) -> torch.Tensor:
    """W[o,c,i,j] = sum_r A[o,r] B[c,r] V[i,r] H[j,r], element by element."""
    a, b = m.out_factor.detach(), m.in_factor.detach().T
    v, h = (f.detach().T for f in m.spatial_factors)
    w = torch.zeros(m.out_channels, m.in_channels, *m.kernel_size, dtype=a.dtype)
    for o, c, i, j in itertools.product(*(range(s) for s in w.shape)):
        w[o, c, i, j] = sum(a[o, r] * b[c, r] * v[i, r] * h[j, r] for r in range(m.rank))
    return w


def test_dense_weight_matches_formula():
    torch.manual_seed(0)
    m = CPConv2d(3, 4, (3, 2), rank=2).to(D)
    torch.testing.assert_close(m.dense_weight().detach(), loop_weight_2d(m))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_factored_forward_equals_dense_conv(nd):
    torch.manual_seed(nd)
    ks, st, pad, dil = (3, 5, 2)[:nd], (2, 1, 2)[:nd], (1, 3, 0)[:nd], (1, 2, 1)[:nd]
    m = CLASSES[nd](5, 7, ks, rank=3, stride=st, padding=pad, dilation=dil).to(D)
    x = torch.randn(2, 5, *((9, 11, 8)[:nd]), dtype=D)
    y = m(x)
    ref = FCONV[nd](x, m.dense_weight(), m.bias, st, pad, dil)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.to_dense()(x), y, rtol=1e-10, atol=1e-12)


def test_same_padding_and_shapes():
    m = CPConv2d(4, 6, (5, 3), rank=2, padding="same")
    assert m(torch.randn(2, 4, 9, 7)).shape == (2, 6, 9, 7)
    assert CPConv1d(4, 6, 9, rank=2, padding="valid")(torch.randn(1, 4, 20)).shape == (1, 6, 12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_parameter_count_formula(nd):
    ks = (3, 5, 7)[:nd]
    r, cin, cout = 4, 6, 10
    m = CLASSES[nd](cin, cout, ks, rank=r)
    assert sum(p.numel() for p in m.parameters()) == r * (cin + sum(ks) + cout) + cout
    m = CLASSES[nd](cin, cout, ks, rank=r, bias=False)
    assert sum(p.numel() for p in m.parameters()) == r * (cin + sum(ks) + cout)


def test_gradcheck_factors():
    torch.manual_seed(0)
    m = CPConv2d(2, 3, (3, 2), rank=2, stride=(1, 2), padding=1).to(D)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(1, 2, 4, 5, dtype=D, requires_grad=True)

    def f(x, *ps):
        return functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def test_init_variance_like_nn_conv():
    torch.manual_seed(0)
    w = CPConv2d(64, 64, 5, rank=32).dense_weight().detach()
    ref = nn.Conv2d(64, 64, 5).weight.detach()
    ratio = (w.var() / ref.var()).item()
    assert 0.5 < ratio < 2.0


def _exact_rank_conv(shape, rank, gen):
    factors = [torch.randn(s, rank, generator=gen, dtype=D) for s in shape]
    letters = "abcde"[: len(shape)]
    w = torch.einsum(",".join(f"{c}z" for c in letters) + "->" + letters, *factors)
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[len(shape)](shape[1], shape[0], shape[2:], padding=1).to(D)
    with torch.no_grad():
        conv.weight.copy_(w)
    return conv


@pytest.mark.parametrize("method", ["als", "svd"])
def test_from_dense_recovers_exact_rank(method):
    gen = torch.Generator().manual_seed(0)
    conv = _exact_rank_conv((8, 6, 3, 3), 3, gen)
    cp = CPConv2d.from_dense(conv, rank=3, method=method, iters=300, generator=gen)
    assert cp.approximation_error < 1e-6
    assert cp.stride == (1, 1) and cp.padding == (1, 1)
    x = torch.randn(2, 6, 7, 7, dtype=D)
    torch.testing.assert_close(cp(x), conv(x), rtol=1e-5, atol=1e-5)


def test_from_dense_reports_true_error_3d_and_low_rank():
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 5, 3, bias=False).to(D)
    cp = CPConv3d.from_dense(conv, rank=2, method="svd", iters=5)
    actual = (torch.linalg.vector_norm(cp.dense_weight() - conv.weight) / torch.linalg.vector_norm(conv.weight)).item()
    assert cp.approximation_error == pytest.approx(actual, rel=1e-9)
    assert 0.0 < cp.approximation_error < 1.0
    assert cp.bias is None
    cp0 = CPConv3d.from_dense(conv, rank=2, method="svd", iters=0)  # initialisation only
    assert cp0.approximation_error >= cp.approximation_error - 1e-12


def test_cp_als_error_is_monotone_in_iterations():
    gen = torch.Generator().manual_seed(1)
    t = torch.randn(5, 4, 3, generator=gen, dtype=D)
    errs = [cp_als(t, 3, iters=i, init="svd")[1] for i in (0, 2, 20)]
    assert errs[0] >= errs[1] - 1e-12 >= errs[2] - 2e-12


def test_depthwise_forward_and_dense():
    torch.manual_seed(0)
    m = CPDepthwiseConv2d(6, (5, 3), rank=2, stride=(2, 1), padding=(2, 1), dilation=(1, 2)).to(D)
    x = torch.randn(2, 6, 9, 10, dtype=D)
    w = torch.einsum("cri,crj->cij", m.vertical, m.horizontal).unsqueeze(1)
    ref = F.conv2d(x, w, m.bias, (2, 1), (2, 1), (1, 2), groups=6)
    torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.to_dense()(x), ref, rtol=1e-10, atol=1e-12)
    assert sum(p.numel() for p in m.parameters()) == 6 * 2 * (5 + 3) + 6


def test_depthwise_from_dense_is_truncated_svd():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, (5, 4), padding=(2, 1), groups=4).to(D)
    full = CPDepthwiseConv2d.from_dense(conv, rank=4)
    assert full.approximation_error < 1e-12
    x = torch.randn(1, 4, 8, 8, dtype=D)
    torch.testing.assert_close(full(x), conv(x), rtol=1e-10, atol=1e-10)
    one = CPDepthwiseConv2d.from_dense(conv, rank=1)
    s = torch.linalg.svdvals(conv.weight.detach()[:, 0])
    expected = (s[:, 1:].pow(2).sum() / s.pow(2).sum()).sqrt().item()
    assert one.approximation_error == pytest.approx(expected, rel=1e-9)


def test_factory_kwargs_and_to():
    for m in (CPConv2d(4, 6, 3, 2, device="meta", dtype=D), CPDepthwiseConv2d(4, 3, 2, device="meta", dtype=D)):
        assert all(p.device.type == "meta" and p.dtype == D for p in m.parameters())
    m = CPConv3d(2, 3, 3, rank=2, padding=1).to(torch.float64)
    assert m(torch.randn(1, 2, 4, 4, 4, dtype=D)).dtype == D


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(rank=0), ValueError, "rank"),
        (dict(kernel_size=(3, 3, 3)), ValueError, "kernel_size"),
        (dict(padding="same", stride=2), ValueError, "stride"),
        (dict(kernel_size=4, padding="same"), ValueError, "same"),
        (dict(padding="full"), ValueError, "padding"),
        (dict(in_channels=0), ValueError, "in_channels"),
        (dict(stride="2"), TypeError, "stride"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = dict(in_channels=4, out_channels=4, kernel_size=3, rank=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        CPConv2d(**args)


def test_from_dense_bad_arguments():
    with pytest.raises(ValueError, match="groups"):
        CPConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2), rank=2)
    with pytest.raises(TypeError, match="conv_module"):
        CPConv2d.from_dense(nn.Conv1d(4, 4, 3), rank=2)
    with pytest.raises(ValueError, match="method"):
        CPConv2d.from_dense(nn.Conv2d(4, 4, 3), rank=2, method="tucker")
    with pytest.raises(ValueError, match="depthwise"):
        CPDepthwiseConv2d.from_dense(nn.Conv2d(4, 4, 3), rank=2)
    with pytest.raises(ValueError, match="expects input"):
        CPConv2d(4, 4, 3, 2)(torch.randn(1, 3, 5, 5))
