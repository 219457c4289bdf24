"""Tests for largekernel.nn.hyper_kernel.HyperKernelConv2d."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.hyper_kernel import HyperKernelConv2d
from nn_helpers import single_thread  # noqa: F401  (autouse fixture)

f64 = torch.float64


def slow_net_value(m: HyperKernelConv2d, cy: float, cx: float) -> torch.Tensor:
    """The coordinate MLP written out for one coordinate (independent of the module's batching)."""
    c = torch.tensor([cy, cx], dtype=f64)
    h = torch.sin(m.filters[0].weight @ c + m.filters[0].bias)
    for i in range(1, m.layers):
        lin = m.linears[i - 1]
        h = torch.sin(m.filters[i].weight @ c + m.filters[i].bias) * (lin.weight @ h + lin.bias)
    return (m.out.weight @ h + m.out.bias) * m.out_scale


def test_kernel_is_the_coordinate_mlp():
    torch.manual_seed(0)
    m = HyperKernelConv2d(4, 6, kernel_size=(5, 3), groups=2, dtype=f64)
    k = m.kernel().detach()
    assert k.shape == (6, 2, 5, 3)
    for (i, cy), (j, cx) in [((0, -1.0), (0, -1.0)), ((2, 0.0), (1, 0.0)), ((4, 1.0), (2, 1.0)), ((1, -0.5), (2, 1.0))]:
        expected = slow_net_value(m, cy, cx).detach().reshape(6, 2)
        torch.testing.assert_close(k[:, :, i, j], expected)


@pytest.mark.parametrize(
    "cin,cout,groups,ksize,padding,stride,size",
    [
        (4, 6, 1, 3, "same", 1, (9, 11)),
        (4, 4, 4, (9, 10), "same", 1, (9, 10)),  # kernel as large as the input, even side
        (6, 3, 3, 5, 2, 2, (12, 9)),
        (2, 4, 2, (4, 6), "valid", (2, 1), (10, 13)),
    ],
)
@pytest.mark.parametrize("context", [False, True])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_fft_direct_reference_agree(cin, cout, groups, ksize, padding, stride, size, context):
    torch.manual_seed(0)
    m = HyperKernelConv2d(cin, cout, ksize, stride=stride, padding=padding, groups=groups, context=context, dtype=f64)
    if context:
        with torch.no_grad():  # make the modulation non-trivial
            m.modulation.weight.normal_(0, 0.5)
    x = torch.randn(3, cin, *size, dtype=f64)
    k = m.kernel(x).detach()
    if context:
        assert k.shape[0] == 3
        ref = torch.cat(
            [F.conv2d(x[i : i + 1], k[i], m.bias.detach(), stride, padding, 1, groups) for i in range(3)]
        )
    else:
        ref = F.conv2d(x, k, m.bias.detach(), stride, padding, 1, groups)
    for mode in ("fft", "direct", "auto"):
        m.mode = mode
        torch.testing.assert_close(m(x), ref, msg=f"mode={mode}")


def test_context_makes_kernels_per_sample():
    torch.manual_seed(0)
    m = HyperKernelConv2d(3, 3, 5, groups=3, context=True, dtype=f64)
    x = torch.randn(2, 3, 8, 8, dtype=f64)
    k0 = m.kernel(x)
    # zero-initialised modulation: starts identical to the context-free kernel
    torch.testing.assert_close(k0[0], k0[1])
    with torch.no_grad():
        m.modulation.weight.normal_()
    k1 = m.kernel(x)
    assert not torch.allclose(k1[0], k1[1])
    with pytest.raises(ValueError, match="context"):
        m.kernel()


@pytest.mark.parametrize("context", [False, True])
@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_gradcheck(context, mode):
    torch.manual_seed(0)
    m = HyperKernelConv2d(2, 2, 3, groups=1, hidden=4, layers=2, context=context, mode=mode, dtype=f64)
    if context:
        with torch.no_grad():
            m.modulation.weight.normal_(0, 0.3)
    x = torch.randn(2, 2, 4, 5, dtype=f64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *m.parameters()), fast_mode=True)


def expected_params(cin, cout, groups, hidden, layers, context, bias=True):
    count = layers * (2 * hidden + hidden)  # sine filters
    count += (layers - 1) * (hidden * hidden + hidden)
    count += hidden * cout * (cin // groups) + cout * (cin // groups)
    count += cout if bias else 0
    if context:
        count += cin * hidden * layers + hidden * layers
    return count


@pytest.mark.parametrize("context", [False, True])
def test_parameter_count_independent_of_kernel_size(context):
    counts = {
        k: sum(p.numel() for p in HyperKernelConv2d(8, 8, k, groups=4, context=context, device="meta").parameters())
        for k in (1, 3, 31, 64, (7, 120))
    }
    assert len(set(counts.values())) == 1
    assert counts[3] == expected_params(8, 8, 4, 32, 3, context)
    m = HyperKernelConv2d(6, 4, 5, groups=2, hidden=7, layers=1, bias=False, device="meta")
    assert sum(p.numel() for p in m.parameters()) == expected_params(6, 4, 2, 7, 1, False, bias=False)


@pytest.mark.parametrize("ksize,cin,groups", [(3, 4, 1), (31, 8, 8), (56, 8, 8)])
def test_kernel_init_scale(ksize, cin, groups):
    torch.manual_seed(0)
    m = HyperKernelConv2d(cin, 8, ksize, groups=groups)
    fan_in = (cin // groups) * ksize * ksize
    assert math.isclose(float(m.kernel().detach().std()), 1 / math.sqrt(fan_in), rel_tol=1e-3)


def test_reparameterize():
    torch.manual_seed(0)
    m = HyperKernelConv2d(4, 4, 7, groups=2, dtype=f64)
    x = torch.randn(2, 4, 10, 10, dtype=f64)
    y = m(x)
    n_before = sum(p.numel() for p in m.parameters())
    m.reparameterize()
    assert m.deployed and not hasattr(m, "filters")
    assert sum(p.numel() for p in m.parameters()) == 4  # bias only
    assert n_before > 4
    torch.testing.assert_close(m(x), y, atol=0, rtol=0)


def test_reparameterize_with_context_is_a_logged_no_op(caplog):
    m = HyperKernelConv2d(2, 2, 3, context=True)
    with caplog.at_level(logging.WARNING):
        m.reparameterize()
    assert not m.deployed and hasattr(m, "filters")
    assert "context" in caplog.text


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
        ({"groups": 3}, "groups"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"padding": "full"}, "padding"),
        ({"padding": -1}, "padding"),
        ({"stride": 2}, "stride"),  # with padding="same"
        ({"hidden": 0}, "hidden"),
        ({"layers": 0}, "layers"),
        ({"omega": 0.0}, "omega"),
        ({"mode": "winograd"}, "mode"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        HyperKernelConv2d(**args)


def test_bad_input():
    m = HyperKernelConv2d(4, 4, 7, padding="valid")
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        m(torch.randn(1, 4, 5, 5))


def test_device_dtype():
    m = HyperKernelConv2d(2, 2, 5, device="cpu", dtype=f64)
    assert all(p.dtype == f64 for p in m.parameters())
    assert m.coords.dtype == f64
    assert m(torch.randn(1, 2, 6, 6, dtype=f64)).dtype == f64
