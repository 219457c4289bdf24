import itertools
import math

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from largekernel.nn.dcls import (
    DCLSConv1d,
    DCLSConv2d,
    DCLSConv3d,
    clamp_positions_,
    dcls_dense_kernel,
    register_position_clamp,
)

D = torch.float64
CLASSES = {1: DCLSConv1d, 2: DCLSConv2d, 3: DCLSConv3d}
FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def hand_kernel_2d(weight, pos, sig, grid, version):
    """Dense kernel written element by element from the spec's formula (python loops)."""
    co, ci, kc = weight.shape
    d0, d1 = grid
    out = torch.zeros(co, ci, d0, d1, dtype=weight.dtype)
    for o, i, k in itertools.product(range(co), range(ci), range(kc)):
        c0 = float(pos[0, o, i, k]) + d0 // 2
        c1 = float(pos[1, o, i, k]) + d1 // 2
        g = torch.zeros(d0, d1, dtype=weight.dtype)
        for u0, u1 in itertools.product(range(d0), range(d1)):
            if version == "gauss":
                s0 = abs(float(sig[0, o, i, k])) + 0.27
                s1 = abs(float(sig[1, o, i, k])) + 0.27
                g[u0, u1] = math.exp(-0.5 * (((u0 - c0) / s0) ** 2 + ((u1 - c1) / s1) ** 2))
            else:
                g[u0, u1] = max(0.0, 1 - abs(u0 - c0)) * max(0.0, 1 - abs(u1 - c1))
        if version == "gauss":
            g = g / (g.sum() + 1e-7)
        out[o, i] += weight[o, i, k] * g
    return out


@pytest.mark.parametrize("version", ["gauss", "bilinear"])
def test_non_square_grid_matches_hand_built_kernel(version):
    torch.manual_seed(0)
    grid = (3, 6)  # non-square, one axis even
    m = DCLSConv2d(2, 3, kernel_count=4, dilated_kernel_size=grid, padding=(1, 2), version=version).to(D)
    ref = hand_kernel_2d(m.weight.detach(), m.P.detach(), None if m.SIG is None else m.SIG.detach(), grid, version)
    torch.testing.assert_close(m.dense_kernel().detach(), ref, rtol=1e-10, atol=1e-12)
    x = torch.randn(2, 2, 7, 9, dtype=D)
    torch.testing.assert_close(m(x), F.conv2d(x, ref, m.bias, padding=(1, 2)), rtol=1e-10, atol=1e-12)


def test_axis_convention_integer_positions():
    """P[0] moves along the height (kernel dim 2), P[1] along the width, each centred with its own D//2."""
    m = DCLSConv2d(1, 1, kernel_count=1, dilated_kernel_size=(3, 7), version="bilinear", bias=False).to(D)
    with torch.no_grad():
        m.weight.fill_(2.0)
        m.P[0].fill_(1.0)   # row 3//2 + 1 = 2
        m.P[1].fill_(-2.0)  # column 7//2 - 2 = 1
    kernel = m.dense_kernel().detach()[0, 0]
    expected = torch.zeros(3, 7, dtype=D)
    expected[2, 1] = 2.0
    torch.testing.assert_close(kernel, expected)
    x = torch.randn(1, 1, 5, 8, dtype=D)
    torch.testing.assert_close(m(x), F.conv2d(x, expected.view(1, 1, 3, 7)))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("version", ["gauss", "bilinear"])
def test_to_dense_and_reparameterize_exact(nd, version):
    torch.manual_seed(nd)
    grid = (4, 5, 3)[:nd]
    m = CLASSES[nd](4, 6, kernel_count=3, dilated_kernel_size=grid, padding="same", groups=2, version=version).to(D)
    x = torch.randn(2, 4, *((7, 6, 5)[:nd]), dtype=D)
    y = m(x)
    assert y.shape == x.shape[:1] + (6,) + x.shape[2:]
    dense = m.to_dense()
    assert dense.weight.shape == (6, 2) + grid
    torch.testing.assert_close(dense(x), y, rtol=1e-10, atol=1e-12)
    # independent check of the "same" padding: pad by hand like torch does (extra on the far side)
    pads = []
    for g in reversed(grid):
        pads += [(g - 1) // 2, g - 1 - (g - 1) // 2]
    ref = FCONV[nd](F.pad(x, pads), dense.weight, dense.bias, groups=2)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    m.reparameterize()
    m.reparameterize()
    assert {n for n, _ in m.named_parameters()} == {"weight", "bias"}
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-12)


def test_stride_dilation_shapes():
    m = DCLSConv2d(3, 5, kernel_count=2, dilated_kernel_size=(5, 3), stride=2, padding=1, dilation=(1, 2))
    x = torch.randn(2, 3, 11, 12)
    y = m(x)
    ref = F.conv2d(x, m.dense_kernel(), m.bias, stride=2, padding=1, dilation=(1, 2))
    torch.testing.assert_close(y, ref)


def test_positions_clamped_in_forward_and_in_place():
    torch.manual_seed(0)
    m = DCLSConv2d(2, 2, kernel_count=3, dilated_kernel_size=(5, 4), version="bilinear").to(D)
    x = torch.randn(1, 2, 6, 6, dtype=D)
    with torch.no_grad():
        m.P[0].fill_(10.0)   # beyond +2
        m.P[1].fill_(-10.0)  # beyond -2
    y = m(x)
    # bounds: axis 0 (D=5) in [-2, 2]; axis 1 (D=4) in [-2, 1]
    with torch.no_grad():
        clamped = m.P.clone()
        clamped[0] = 2.0
        clamped[1] = -2.0
    ref = F.conv2d(x, dcls_dense_kernel(m.weight, clamped, None, (5, 4), "bilinear"), m.bias)
    torch.testing.assert_close(y, ref)
    m.clamp_positions_()
    assert m.P[0].max() == 2.0 and m.P[1].min() == -2.0
    with torch.no_grad():
        m.P[1].fill_(5.0)
    clamp_positions_([m])
    assert m.P[1].max() == 1.0


def test_optimizer_hook_clamps_after_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(DCLSConv2d(2, 2, kernel_count=2, dilated_kernel_size=3))
    opt = torch.optim.SGD(model.parameters(), lr=1e4)
    handle = register_position_clamp(opt, model)
    model(torch.randn(2, 2, 5, 5)).pow(2).sum().backward()
    with torch.no_grad():
        model[0].P.grad.fill_(-1.0)  # push every position far outside the grid
    opt.step()
    assert model[0].P.abs().max() <= 1.0
    handle.remove()
    with pytest.raises(TypeError, match="optimizer"):
        register_position_clamp(model, model)


@pytest.mark.parametrize("version", ["gauss", "bilinear"])
def test_gradcheck_weight_positions_sigmas(version):
    torch.manual_seed(0)
    m = DCLSConv2d(2, 2, kernel_count=2, dilated_kernel_size=(3, 4), padding=1, version=version).to(D)
    with torch.no_grad():  # keep positions off the bilinear kinks (integers) and inside the grid
        m.P.copy_(torch.tensor([0.3, -0.6], dtype=D).view(2, 1, 1, 1) + 0.1 * torch.rand_like(m.P))
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(1, 2, 3, 3, dtype=D, requires_grad=True)

    def f(x, *ps):
        return functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)
    out = f(x, *params).sum()
    grads = torch.autograd.grad(out, params)
    for name, g in zip(names, grads):
        assert g.abs().sum() > 0, f"no gradient reaches {name}"


def test_parameter_count_and_no_buffers():
    m = DCLSConv2d(6, 8, kernel_count=5, dilated_kernel_size=9, groups=2)
    per = 8 * 3 * 5
    assert sum(p.numel() for p in m.parameters()) == per * (1 + 2 + 2) + 8
    m = DCLSConv3d(4, 4, kernel_count=2, dilated_kernel_size=3, version="bilinear", bias=False)
    assert sum(p.numel() for p in m.parameters()) == 4 * 4 * 2 * (1 + 3)
    assert len(list(m.buffers())) == 0  # grids are built per call on the input's device


def test_factory_kwargs_and_to():
    m = DCLSConv2d(2, 4, 3, 5, device="meta", dtype=D)
    assert all(p.device.type == "meta" and p.dtype == D for p in m.parameters())
    m = DCLSConv1d(2, 4, 3, 7, padding=3).to(torch.float64)
    y = m(torch.randn(1, 2, 10, dtype=D))
    assert y.dtype == D and y.shape == (1, 4, 10)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(version="linear"), ValueError, "version"),
        (dict(padding="full"), ValueError, "padding"),
        (dict(padding="same", stride=2), ValueError, "stride"),
        (dict(groups=3), ValueError, "divisible by groups"),
        (dict(kernel_count=0), ValueError, "kernel_count"),
        (dict(dilated_kernel_size=(3, 3, 3)), ValueError, "dilated_kernel_size"),
        (dict(dilated_kernel_size=0), ValueError, "dilated_kernel_size"),
        (dict(stride=1.5), TypeError, "stride"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = dict(in_channels=4, out_channels=4, kernel_count=2, dilated_kernel_size=5)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        DCLSConv2d(**args)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expects input"):
        DCLSConv2d(4, 4, 2, 5)(torch.randn(1, 3, 8, 8))


def test_positions_on_the_bound_get_full_gradient():
    torch.manual_seed(0)
    m = DCLSConv2d(1, 1, kernel_count=1, dilated_kernel_size=(5, 5), bias=False).to(D)
    with torch.no_grad():
        m.P[0].fill_(2.0)  # exactly on the upper bound
        m.P[1].fill_(0.3)
    x = torch.randn(1, 1, 6, 6, dtype=D)
    m(x).sum().backward()
    p = m.P.detach().clone().requires_grad_()
    F.conv2d(x, dcls_dense_kernel(m.weight.detach(), p, m.SIG.detach(), (5, 5))).sum().backward()
    torch.testing.assert_close(m.P.grad, p.grad)


def test_project_reparameterize_walker():
    import largekernel

    torch.manual_seed(0)
    model = torch.nn.Sequential(DCLSConv2d(2, 3, 3, (5, 4), padding="same"), torch.nn.ReLU()).to(D)
    x = torch.randn(1, 2, 6, 7, dtype=D)
    before = model(x)
    fused = largekernel.reparameterize(model)
    assert fused[0].deployed and fused[0].P is None
    torch.testing.assert_close(fused(x), before, rtol=1e-10, atol=1e-12)
