"""The masked encoder: no leakage from hidden pixels, visible-only statistics, dense behaviour kept."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import largekernel
from largekernel.nn.layers import SqueezeExcite
from largekernel.pretrain import MaskContext, SparseEncoder, random_mask, sparsify, upsample_mask
from largekernel.pretrain.model import create_backbone

from .conftest import TINY_BACKBONES


def _encoder(key: str, seed: int = 0):
    name, kwargs, size = TINY_BACKBONES[key]
    torch.manual_seed(seed)
    backbone = largekernel.create_model(name, features_only=True, **kwargs)
    dense = copy.deepcopy(backbone)
    return SparseEncoder(backbone), dense, size


def _perturb_hidden(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    visible = upsample_mask(mask, x.shape[-2:])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 50
    return torch.where(visible, x, noise)


@pytest.mark.parametrize("key", list(TINY_BACKBONES))
def test_visible_outputs_do_not_depend_on_hidden_pixels(key):
    enc, dense, size = _encoder(key)
    enc.train()  # BatchNorm on batch statistics: the batch-level leakage path is exercised too
    x = torch.randn(3, 1, size, size)
    mask = random_mask(3, enc.grid((size, size)), 0.6, generator=torch.Generator().manual_seed(1))
    x2 = _perturb_hidden(x, mask, seed=2)
    assert not torch.equal(x, x2)
    torch.manual_seed(0)
    feats = enc(x, mask)
    torch.manual_seed(0)
    feats2 = enc(x2, mask)
    for f, f2 in zip(feats, feats2):
        m = upsample_mask(mask, f.shape[-2:])
        assert torch.equal(f, f2), "visible features changed with the hidden pixels"
        assert torch.count_nonzero(f.masked_select(~m)) == 0, "hidden positions must stay zero"
        assert torch.count_nonzero(f.masked_select(m)) > 0
    # power check: the same perturbation does change a plain dense backbone's visible features
    # (exact comparison: ConvNeXt's 1e-6 layer scale keeps the change tiny but non-zero)
    dense.train()
    d1, d2 = dense(x * upsample_mask(mask, x.shape[-2:])), dense(x2)
    m = upsample_mask(mask, d1[-1].shape[-2:])
    assert not torch.equal(d1[-1].masked_select(m), d2[-1].masked_select(m))


@pytest.mark.parametrize("key", ["unireplknet", "lsnet", "replknet"])
def test_every_spatial_layer_sees_zeros_at_hidden_positions(key):
    """Stronger than the output test: no conv with a spatial reach ever reads a non-zero hidden value."""
    enc, _, size = _encoder(key)
    seen = []

    def check(module, inputs):
        x = inputs[0]
        if x.dim() == 4 and x.shape[-1] > 1 and enc._ctx.mask is not None:
            m = enc._ctx.at(x.shape[-2:])
            seen.append(int(torch.count_nonzero(x.masked_select(~m))))

    handles = [m.register_forward_pre_hook(check) for m in enc.modules()
               if isinstance(m, nn.modules.conv._ConvNd) and (max(m.kernel_size) > 1 or max(m.stride) > 1)]
    x = torch.randn(2, 1, size, size)
    enc(x, random_mask(2, enc.grid((size, size)), 0.5, generator=torch.Generator().manual_seed(3)))
    for h in handles:
        h.remove()
    assert len(seen) >= 4 and all(v == 0 for v in seen), seen


@pytest.mark.parametrize("key", list(TINY_BACKBONES))
def test_without_mask_the_encoder_is_the_dense_backbone(key):
    enc, dense, size = _encoder(key)
    enc.eval(), dense.eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        for a, b in zip(enc(x), dense(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert list(enc.backbone.state_dict()) == list(dense.state_dict())


@pytest.mark.parametrize("key", list(TINY_BACKBONES))
def test_every_norm_and_squeeze_excite_is_converted(key):
    enc, dense, _ = _encoder(key)
    pooled = [m for m in dense.modules() if type(m).__name__ == "SqueezeExcite"]
    stats = [m for m in dense.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))]
    converted = [m for m in enc.modules() if type(m).__name__.startswith("Sparse") and m is not enc]
    assert len(converted) == len(pooled) + len(stats)
    assert key.startswith("convnext") or converted


def _reference_bn(x64, keep, bn):
    """float64 BatchNorm of the visible positions only (an independent re-implementation)."""
    vis = x64.permute(0, 2, 3, 1)[keep]  # (V, C)
    mean, var = vis.mean(0), vis.var(0, unbiased=False)
    y = (vis - mean) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
    out = torch.zeros_like(x64.permute(0, 2, 3, 1))
    out[keep] = y
    return out.permute(0, 3, 1, 2), mean, vis.var(0, unbiased=True)


def test_batchnorm_statistics_ignore_hidden_positions():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    ctx = MaskContext()
    sparsify(bn, ctx)
    mask = random_mask(4, (3, 3), 0.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, 6, 6) * 3 + 1
    keep = upsample_mask(mask, (6, 6))[:, 0]
    x_garbage = x.masked_fill(~keep[:, None], 1e4)  # hidden values far from the visible ones
    ref, mean, var_unbiased = _reference_bn(x.double(), keep, bn)
    with ctx.active(mask):
        y = bn(x_garbage)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    # running statistics: the usual momentum update with the visible-only batch statistics
    torch.testing.assert_close(bn.running_mean.double(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), 0.9 + 0.1 * var_unbiased, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    # eval mode uses the running statistics and still zeroes the hidden positions
    bn.eval()
    with ctx.active(mask):
        y_eval = bn(x_garbage)
    dense_eval = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(y_eval, dense_eval * keep[:, None], rtol=1e-5, atol=1e-5)


def test_groupnorm_and_squeeze_excite_use_visible_positions():
    torch.manual_seed(0)
    gn, se = nn.GroupNorm(2, 6), SqueezeExcite(6, 3)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2), gn.bias.uniform_(-1, 1)
    ctx = MaskContext()
    sparsify(gn, ctx), sparsify(se, ctx)
    mask = random_mask(2, (2, 2), 0.5, generator=torch.Generator().manual_seed(4))
    x = torch.randn(2, 6, 4, 4)
    keep = upsample_mask(mask, (4, 4))
    xg = x.masked_fill(~keep, -7.0)
    with ctx.active(mask):
        y_gn, y_se = gn(xg), se(x * keep)
    for i in range(2):  # per image: dense GroupNorm / SE on the visible positions as a set
        vis = x[i].permute(1, 2, 0)[keep[i, 0]]  # (V, C)
        ref = nn.functional.group_norm(vis.T[None, :, :, None].double(), 2, gn.weight.double(),
                                       gn.bias.double(), gn.eps)[0, :, :, 0].T
        torch.testing.assert_close(y_gn[i].permute(1, 2, 0)[keep[i, 0]].double(), ref, rtol=1e-5, atol=1e-5)
        scale = torch.sigmoid(se.up(torch.relu(se.down(vis.mean(0)[None, :, None, None]))))[0, :, 0, 0]
        torch.testing.assert_close(y_se[i].permute(1, 2, 0)[keep[i, 0]], vis * scale, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(y_gn.masked_select(~keep)) == 0


def test_bad_backbones_and_sizes_raise_clear_errors():
    plain = largekernel.create_model("convnext_atto", num_classes=10)
    with pytest.raises(ValueError, match="features_only=True"):
        SparseEncoder(plain)
    with pytest.raises(ValueError, match="not a 2-D image backbone"):
        SparseEncoder(create_backbone("sgconv_seq_tiny"))
    with pytest.raises(ValueError, match="features_only=True"):
        create_backbone("convnext_atto", {"features_only": False})
    enc, _, _ = _encoder("convnext")
    with pytest.raises(ValueError, match=r"image size 48x40 is not divisible by the backbone's final stride 32"):
        enc(torch.randn(1, 1, 48, 40), torch.ones(1, 1, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        enc(torch.randn(1, 1, 64, 64), torch.ones(1, 1, 4, 4, dtype=torch.bool))
