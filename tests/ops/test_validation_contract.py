"""ops/validation.py checked against PyTorch's own convolution (issue 20, mutation testing).

``normalize_conv_args`` must accept exactly the arguments ``F.conv1d/2d/3d`` accept, and the
:class:`ConvArgs` it returns must describe the convolution PyTorch computes: the output size,
the explicit ``(left, right)`` padding of ``padding="same"`` (applied with ``F.pad`` it must
give PyTorch's own "same" result) and the derived properties. Errors must name the argument
and what was expected (the messages are the user-facing contract, so they are matched whole).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from largekernel.ops.validation import ConvArgs, expand_tuple, normalize_conv_args

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _pad_arg(pads):
    # F.pad takes (left, right) pairs starting from the last dimension
    return [p for pair in reversed(pads) for p in pair]


def test_same_padding_puts_the_odd_element_on_the_right():
    x, w = torch.randn(1, 1, 9, 9, 9), torch.randn(1, 1, 4, 3, 2)
    args = normalize_conv_args(x, w, None, 1, "same", (1, 3, 1), 1)
    assert args.padding == ((1, 2), (3, 3), (0, 1))
    assert not args.symmetric
    assert normalize_conv_args(x, w, None, 1, "valid", 1, 1).padding == ((0, 0),) * 3


def test_padded_size_may_equal_the_kernel_extent():
    x, w = torch.randn(1, 1, 3), torch.randn(1, 1, 5)
    args = normalize_conv_args(x, w, None, 1, 1, 1, 1)
    assert args.output_size((3,)) == (1,)
    with pytest.raises(ValueError, match=r"^kernel size can't be greater than the padded input: spatial dim 0 has "
                                         r"padded size 4 \(input 2 \+ padding 1\+1\) but the dilated kernel spans 5$"):
        normalize_conv_args(x[..., :2], w, None, 1, 1, 1, 1)


def test_properties_of_a_hand_made_description():
    args = ConvArgs(2, (3, 5), (1, 2), ((1, 1), (2, 3)), (2, 1), groups=4, in_channels=4, out_channels=8)
    assert args.is_depthwise and args.in_per_group == 1 and args.out_per_group == 2
    assert args.max_kernel == 5 and not args.symmetric
    assert args.output_size((10, 11)) == ((10 + 2 - 4 - 1) // 1 + 1, (11 + 5 - 4 - 1) // 2 + 1)
    assert not ConvArgs(2, (3, 3), (1, 1), ((1, 1),) * 2, (1, 1), 1, 1, 1).is_depthwise  # groups=1 is dense
    assert ConvArgs(1, (3,), (1,), ((1, 1),), (1,), 1, 1, 1).sym_padding == (1,)


@pytest.mark.parametrize(
    "value, nd, expected",
    [(3, 2, (3, 3)), ((4,), 3, (4, 4, 4)), ([1, 2], 2, (1, 2)), (torch.Size([5, 6]), 2, (5, 6)), ((7,), 1, (7,))],
)
def test_expand_tuple(value, nd, expected):
    out = expand_tuple(value, nd, "stride")
    assert out == expected and all(type(v) is int for v in out)


@pytest.mark.parametrize(
    "value, exc, message",
    [
        (True, TypeError, "stride must be an int or a sequence of 2 ints, got bool"),
        (2.0, TypeError, "stride must be an int or a sequence of 2 ints, got float"),
        ("2", TypeError, "stride must be an int or a sequence of 2 ints, got str"),
        ((1, 2, 3), ValueError, "stride must be an int or a sequence of 2 ints, got (1, 2, 3)"),
        ((1, 2.0), ValueError, "stride must be an int or a sequence of 2 ints, got (1, 2.0)"),
        ([True, 1], ValueError, "stride must be an int or a sequence of 2 ints, got [True, 1]"),
        ((), ValueError, "stride must be an int or a sequence of 2 ints, got ()"),
    ],
)
def test_expand_tuple_errors(value, exc, message):
    with pytest.raises(exc) as info:
        expand_tuple(value, 2, "stride")
    assert str(info.value) == message


def _call(xs=(2, 4, 8, 8), ws=(4, 1, 3, 3), bias=None, stride=1, padding=0, dilation=1, groups=4, **kw):
    x = kw.get("x", torch.randn(xs))
    w = kw.get("w", torch.randn(ws))
    return normalize_conv_args(x, w, bias, stride, padding, dilation, groups)


@pytest.mark.parametrize(
    "kw, exc, message",
    [
        (dict(x=[1.0]), TypeError, "input must be a torch.Tensor, got list"),
        (dict(w=3), TypeError, "weight must be a torch.Tensor, got int"),
        (dict(bias=[0.0] * 4), TypeError, "bias must be a torch.Tensor or None, got list"),
        (dict(ws=(4, 1)), ValueError, "weight must have 3, 4 or 5 dimensions (C_out, C_in/groups, *kernel) for "
                                      "1-D/2-D/3-D convolution, got shape (4, 1)"),
        (dict(ws=(4, 1, 3, 3, 3, 3)), ValueError, "weight must have 3, 4 or 5 dimensions (C_out, C_in/groups, "
                                                  "*kernel) for 1-D/2-D/3-D convolution, got shape (4, 1, 3, 3, 3, 3)"),
        (dict(xs=(4,)), ValueError, "input must have 4 dimensions (batched) or 3 (unbatched) for a 2-D convolution "
                                    "with weight of shape (4, 1, 3, 3), got input of shape (4,)"),
        (dict(xs=(1, 2, 4, 8, 8)), ValueError, "input must have 4 dimensions (batched) or 3 (unbatched) for a 2-D "
                                               "convolution with weight of shape (4, 1, 3, 3), got input of shape "
                                               "(1, 2, 4, 8, 8)"),
        (dict(x=torch.ones(2, 4, 8, 8, dtype=torch.long)), TypeError,
         "input and weight must be floating point, got torch.int64 and torch.float32"),
        (dict(w=torch.ones(4, 1, 3, 3, dtype=torch.long)), TypeError,
         "input and weight must be floating point, got torch.float32 and torch.int64"),
        (dict(w=torch.ones(4, 1, 3, 3, dtype=torch.float64)), TypeError,
         "Input type (torch.float32) and weight type (torch.float64) should be the same"),
        (dict(w=torch.ones(4, 1, 3, 3, device="meta")), ValueError,
         "input is on cpu but weight is on meta; they must match"),
        (dict(groups=0), ValueError, "groups must be a positive int, got 0"),
        (dict(groups=True), ValueError, "groups must be a positive int, got True"),
        (dict(groups=2.0), ValueError, "groups must be a positive int, got 2.0"),
        (dict(xs=(2, 6, 8, 8), ws=(6, 2, 3, 3)), ValueError, "out_channels (weight.shape[0] = 6) must be divisible "
                                                             "by groups (4)"),
        (dict(xs=(2, 6, 8, 8), ws=(4, 2, 3, 3)), ValueError, "in_channels (6) must be divisible by groups (4)"),
        (dict(xs=(2, 6, 8, 8), ws=(6, 2, 3, 3), groups=2), ValueError,
         "expected input with 4 channels (weight.shape[1]=2 x groups=2), got input of shape (2, 6, 8, 8) with "
         "6 channels"),
        (dict(bias=torch.zeros(3)), ValueError, "bias must have shape (4,), got (3,)"),
        (dict(bias=torch.zeros(4, 1)), ValueError, "bias must have shape (4,), got (4, 1)"),
        (dict(bias=torch.zeros(4, dtype=torch.float64)), TypeError,
         "bias dtype (torch.float64) must match input dtype (torch.float32)"),
        (dict(bias=torch.zeros(4, device="meta")), ValueError, "bias is on meta but input is on cpu; they must match"),
        (dict(ws=(4, 1, 3, 0)), ValueError, "weight has an empty kernel: shape (4, 1, 3, 0)"),
        (dict(ws=(4, 1, 0, 3)), ValueError, "weight has an empty kernel: shape (4, 1, 0, 3)"),
        (dict(stride=(1, 0)), ValueError, "stride must be positive, got (1, 0)"),
        (dict(stride=0), ValueError, "stride must be positive, got 0"),
        (dict(dilation=(2, 0)), ValueError, "dilation must be positive, got (2, 0)"),
        (dict(dilation=-1), ValueError, "dilation must be positive, got -1"),
        (dict(padding=(0, -1)), ValueError, "padding must be non-negative, got (0, -1)"),
        (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a sequence of 2 ints, got (1, 2, 3)"),
        (dict(dilation=(1, 2, 3)), ValueError, "dilation must be an int or a sequence of 2 ints, got (1, 2, 3)"),
        (dict(padding=(1, 2, 3)), ValueError, "padding must be an int or a sequence of 2 ints, got (1, 2, 3)"),
        (dict(padding=1.5), TypeError, "padding must be an int or a sequence of 2 ints, got float"),
        (dict(padding="full"), ValueError, "padding must be 'same', 'valid', an int or a sequence of ints, got 'full'"),
        (dict(padding="same", stride=(1, 2)), ValueError,
         "padding='same' is not supported for strided convolutions (stride must be 1)"),
        (dict(padding="same", stride=(2, 1)), ValueError,
         "padding='same' is not supported for strided convolutions (stride must be 1)"),
        (dict(xs=(2, 4, 8, 2), dilation=2), ValueError,
         "kernel size can't be greater than the padded input: spatial dim 1 has padded size 2 (input 2 + padding "
         "0+0) but the dilated kernel spans 5"),
    ],
)
def test_errors_name_the_argument_and_the_expectation(kw, exc, message):
    with pytest.raises(exc) as info:
        _call(**kw)
    assert str(info.value) == message


def test_unbatched_input_reads_channels_from_the_first_dimension():
    args = _call(xs=(4, 5), ws=(8, 1, 3), groups=4, padding="same")
    assert args.unbatched and (args.in_channels, args.out_channels) == (4, 8) and args.padding == ((1, 1),)
    with pytest.raises(ValueError, match=r"^in_channels \(5\) must be divisible by groups \(4\)$"):
        _call(xs=(5, 6), ws=(8, 1, 3), groups=4)


@st.composite
def conv_calls(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes not divisible
    c_out = groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1]))
    w_in = max(1, c_in // groups) + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes a wrong weight.shape[1]
    ks = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    spatial = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    per_dim = lambda lo, hi: st.one_of(  # noqa: E731
        st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * nd), st.lists(st.integers(lo, hi), min_size=1, max_size=1)
    )
    stride = draw(per_dim(1, 3))
    dilation = draw(per_dim(1, 3))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), per_dim(0, 3)))
    batched = draw(st.booleans())
    bias = draw(st.booleans())
    return nd, groups, c_in, c_out, w_in, ks, spatial, stride, dilation, padding, batched, bias


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@settings(max_examples=150, deadline=None)
@given(call=conv_calls())
def test_accepts_what_pytorch_accepts_and_describes_its_output(call):
    nd, groups, c_in, c_out, w_in, ks, spatial, stride, dilation, padding, batched, with_bias = call
    x = torch.randn(((2, c_in) if batched else (c_in,)) + spatial, dtype=torch.float64)
    w = torch.randn((c_out, w_in) + ks, dtype=torch.float64)
    b = torch.randn(c_out, dtype=torch.float64) if with_bias else None
    try:
        expected = CONV[nd](x, w, b, stride, padding, dilation, groups)
    except RuntimeError:
        with pytest.raises((ValueError, TypeError)):
            normalize_conv_args(x, w, b, stride, padding, dilation, groups)
        return
    args = normalize_conv_args(x, w, b, stride, padding, dilation, groups)
    assert args.nd == nd and args.unbatched is (not batched)
    assert (args.in_channels, args.out_channels, args.groups) == (c_in, c_out, groups)
    assert isinstance(args.in_channels, int) and isinstance(args.out_channels, int)
    assert (args.in_per_group, args.out_per_group) == (c_in // groups, c_out // groups)
    assert args.kernel_size == ks
    assert args.stride == expand_tuple(stride, nd, "stride") and args.dilation == expand_tuple(dilation, nd, "dilation")
    assert args.is_depthwise == (groups == c_in and groups > 1)
    assert args.max_kernel == max(d * (k - 1) + 1 for k, d in zip(ks, args.dilation))
    assert args.output_size(spatial) == tuple(expected.shape[-nd:])
    assert args.symmetric == all(lo == hi for lo, hi in args.padding)
    if args.symmetric:
        assert args.sym_padding == tuple(lo for lo, _ in args.padding)
    # the explicit padding pairs reproduce PyTorch's result (incl. asymmetric "same")
    got = CONV[nd](F.pad(x, _pad_arg(args.padding)), w, b, args.stride, 0, args.dilation, groups)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
