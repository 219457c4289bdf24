"""InceptionDWConv2d: branch maths and channel order vs float64 F.conv2d, dense form, bad args."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.conv import Conv2d
from largekernel.nn.inception_dw import InceptionDWConv2d


def _randomise(m: InceptionDWConv2d) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))


def _reference(x: torch.Tensor, m: InceptionDWConv2d) -> torch.Tensor:
    """Independent per-branch reference: explicit channel slices + F.conv2d with explicit pads."""
    c = x.shape[1]
    g = int(c * m.branch_ratio)
    n_id = c - 3 * g
    d = m.dilation
    ks, kb = m.square_kernel_size, m.band_kernel_size
    xs = x[:, n_id : n_id + g]
    xw = x[:, n_id + g : n_id + 2 * g]
    xh = x[:, n_id + 2 * g :]
    ys = F.conv2d(xs, m.dwconv_hw.weight, m.dwconv_hw.bias, padding=d * (ks // 2), dilation=d, groups=g)
    yw = F.conv2d(xw, m.dwconv_w.weight, m.dwconv_w.bias, padding=(0, d * (kb // 2)), dilation=(1, d), groups=g)
    yh = F.conv2d(xh, m.dwconv_h.weight, m.dwconv_h.bias, padding=(d * (kb // 2), 0), dilation=(d, 1), groups=g)
    return torch.cat([x[:, :n_id], ys, yw, yh], dim=1)


@pytest.mark.parametrize(
    "c, ks, kb, ratio, dilation, hw",
    [
        (40, 3, 9, 0.25, 1, (9, 11)),  # inception_next_atto's mixer
        (16, 3, 11, 0.125, 1, (7, 13)),  # default ratio, band longer than the height
        (13, 5, 7, 0.2, 1, (6, 5)),  # odd channel count: g = 2, identity = 7
        (12, 3, 5, 1 / 3, 2, (10, 9)),  # no identity channels, dilated
    ],
)
def test_matches_float64_reference(c, ks, kb, ratio, dilation, hw):
    torch.manual_seed(0)
    m = InceptionDWConv2d(c, ks, kb, ratio, dilation=dilation, dtype=torch.float64)
    _randomise(m)
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _reference(x, m), rtol=1e-12, atol=1e-12)
    g = int(c * ratio)
    assert m.split_sizes == (c - 3 * g, g, g, g)


def test_channel_order_and_kernel_orientation():
    # A one-hot input pixel reveals which channels are copied, and the footprint of each branch.
    c, g = 8, 2
    m = InceptionDWConv2d(c, 3, 5, 0.25, dtype=torch.float64)
    with torch.no_grad():
        for conv in (m.dwconv_hw, m.dwconv_w, m.dwconv_h):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
    x = torch.zeros(1, c, 9, 9, dtype=torch.float64)
    x[:, :, 4, 4] = 1.0
    y = m(x)
    # identity channels come first and are copied unchanged
    torch.testing.assert_close(y[:, : c - 3 * g], x[:, : c - 3 * g])
    nonzero = [(y[0, i] != 0).nonzero() for i in range(c)]
    sq, wb, hb = nonzero[c - 3 * g], nonzero[c - 2 * g], nonzero[c - g]
    assert sq[:, 0].unique().tolist() == [3, 4, 5] and sq[:, 1].unique().tolist() == [3, 4, 5]
    # width band: one row, 5 columns; height band: 5 rows, one column
    assert wb[:, 0].unique().tolist() == [4] and wb[:, 1].unique().tolist() == [2, 3, 4, 5, 6]
    assert hb[:, 0].unique().tolist() == [2, 3, 4, 5, 6] and hb[:, 1].unique().tolist() == [4]


def test_timm_key_layout_and_engine_convs():
    m = InceptionDWConv2d(40, band_kernel_size=9, branch_ratio=0.25)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "dwconv_hw.weight": (10, 1, 3, 3),
        "dwconv_hw.bias": (10,),
        "dwconv_w.weight": (10, 1, 1, 9),
        "dwconv_w.bias": (10,),
        "dwconv_h.weight": (10, 1, 9, 1),
        "dwconv_h.bias": (10,),
    }
    assert all(isinstance(conv, Conv2d) for conv in (m.dwconv_hw, m.dwconv_w, m.dwconv_h))


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("ks, kb", [(3, 11), (7, 5), (3, 3)])
def test_to_dense_is_exact(ks, kb, dilation):
    torch.manual_seed(1)
    m = InceptionDWConv2d(11, ks, kb, 0.25, dilation=dilation, dtype=torch.float64)
    _randomise(m)
    x = torch.randn(2, 11, 8, 13, dtype=torch.float64)
    dense = m.to_dense()
    k = dilation * (max(ks, kb) - 1) + 1
    assert isinstance(dense, Conv2d)
    assert dense.kernel_size == (k, k) and dense.groups == 11 and dense.weight.dtype == torch.float64
    torch.testing.assert_close(dense(x), m(x), rtol=1e-12, atol=1e-12)


def test_densify_in_place():
    torch.manual_seed(2)
    m = InceptionDWConv2d(16, 3, 7, 0.25)
    _randomise(m)
    x = torch.randn(1, 16, 10, 10)
    y = m(x)
    m.densify()
    assert set(m.state_dict()) == {"dense.weight", "dense.bias"}
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
    m.densify()  # idempotent
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.to_dense()(x), y, rtol=1e-5, atol=1e-5)
    assert "dense" in repr(m)


def test_whole_model_reparameterisation_keeps_split_form():
    # the dense form is slower: the generic reparameterize protocol must leave the mixer alone
    m = InceptionDWConv2d(16, 3, 7, 0.25)
    assert not any(hasattr(m, name) for name in ("reparameterize", "switch_to_deploy", "fuse"))


def test_gradcheck_tiny():
    torch.manual_seed(3)
    m = InceptionDWConv2d(4, 3, 3, 0.25, dtype=torch.float64)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_(True) for p in m.parameters())
    assert torch.autograd.gradcheck(fn, inputs)


def test_dtype_device_factory_kwargs():
    m = InceptionDWConv2d(8, branch_ratio=0.25, dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in m.parameters())


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(in_channels=0), ValueError),
        (dict(in_channels=8, square_kernel_size=4), ValueError),
        (dict(in_channels=8, band_kernel_size=10), ValueError),
        (dict(in_channels=8, band_kernel_size=2.5), TypeError),
        (dict(in_channels=8, branch_ratio=0.5), ValueError),
        (dict(in_channels=8, branch_ratio=0.0), ValueError),
        (dict(in_channels=3, branch_ratio=0.125), ValueError),  # g = 0 channels per branch
        (dict(in_channels=8, branch_ratio=0.25, dilation=0), ValueError),
    ],
)
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        InceptionDWConv2d(**kwargs)


def test_bad_input_shape():
    m = InceptionDWConv2d(8, branch_ratio=0.25)
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(1, 9, 5, 5))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(8, 5, 5))
