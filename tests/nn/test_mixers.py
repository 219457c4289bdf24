"""create_mixer / list_mixers: every available mixer keeps NCHW shape and trains; bad arguments."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.inception_dw import InceptionDWConv2d
from largekernel.nn.mixers import MIXERS_NEEDING_SIZE, create_mixer, list_mixers

# mixer name -> module that implements it (written concurrently by other engineers)
MIXER_MODULES = {
    "dwconv": "largekernel.nn.conv",
    "dilated_reparam": "largekernel.nn.dilated_reparam",
    "inception": "largekernel.nn.inception_dw",
    "dcls": "largekernel.nn.dcls",
    "lsconv": "largekernel.nn.ls_conv",
    "cp": "largekernel.nn.cp_conv",
    "hyper": "largekernel.nn.hyper_kernel",
    "sgconv2d": "largekernel.nn.sgconv",
}


def _require(name: str) -> None:
    # our own modules: a broken import must fail the test, never skip it
    importlib.import_module(MIXER_MODULES[name])


def test_list_mixers():
    assert list_mixers() == sorted(MIXER_MODULES)
    available = list_mixers(available_only=True)
    assert {"dwconv", "inception"} <= set(available) <= set(MIXER_MODULES)


@pytest.mark.parametrize("name", sorted(MIXER_MODULES))
def test_mixer_shape_and_backward(name):
    _require(name)
    torch.manual_seed(0)
    dim, hw = 16, (9, 12)
    kwargs = {"size": hw} if name in MIXERS_NEEDING_SIZE else {}
    mixer = create_mixer(name, dim, 7, **kwargs)
    x = torch.randn(2, dim, *hw, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in mixer.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(MIXER_MODULES))
def test_mixer_factory_kwargs_dtype(name):
    _require(name)
    kwargs = {"size": (6, 6)} if name in MIXERS_NEEDING_SIZE else {}
    mixer = create_mixer(name, 16, 5 if name != "dilated_reparam" else 7, dtype=torch.float64, **kwargs)
    params = list(mixer.parameters())
    assert params and all(p.dtype == torch.float64 for p in params)
    assert mixer(torch.randn(1, 16, 6, 6, dtype=torch.float64)).dtype == torch.float64


def test_dwconv_matches_float64_reference():
    torch.manual_seed(1)
    m = create_mixer("dwconv", 6, 5, dtype=torch.float64)
    x = torch.randn(2, 6, 7, 4, dtype=torch.float64)
    ref = F.conv2d(x, m.weight, m.bias, padding=2, groups=6)
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)
    assert m.weight.shape == (6, 1, 5, 5)


def test_inception_kernel_size_is_band_length():
    m = create_mixer("inception", 32, 9, branch_ratio=0.25)
    assert isinstance(m, InceptionDWConv2d)
    assert m.band_kernel_size == 9 and m.square_kernel_size == 3 and m.split_sizes == (8, 8, 8, 8)


def test_dilated_reparam_kernel_size():
    _require("dilated_reparam")
    m = create_mixer("dilated_reparam", 8, 13)
    assert m.kernel_size == 13


def test_sgconv2d_needs_size():
    _require("sgconv2d")
    with pytest.raises(ValueError, match="size"):
        create_mixer("sgconv2d", 8)
    assert create_mixer("sgconv2d", 8, size=5)(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        create_mixer("nope", 8)
    for name in list_mixers():
        assert name in str(info.value)


@pytest.mark.parametrize("dim", [0, -3, 2.0, True])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        create_mixer("dwconv", dim)


@pytest.mark.parametrize("kernel_size", [0, 3.0])
def test_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match="kernel_size"):
        create_mixer("dwconv", 8, kernel_size)


def test_even_kernel_for_dwconv():
    with pytest.raises(ValueError, match="odd"):
        create_mixer("dwconv", 8, 4)


def test_unknown_option_raises_type_error():
    with pytest.raises(TypeError, match="not_an_option"):
        create_mixer("dwconv", 8, 3, not_an_option=1)
    with pytest.raises(TypeError, match="not_an_option"):
        create_mixer("inception", 8, 3, branch_ratio=0.25, not_an_option=1)

