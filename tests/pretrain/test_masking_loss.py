"""Masks (exact counts, up-sampling) and the loss (hidden patches only, per-patch normalised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from largekernel.pretrain import masked_patch_loss, random_mask, upsample_mask
from largekernel.pretrain.loss import patchify, unpatchify


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), ratio=st.floats(0.01, 0.99), n=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_random_mask_hides_the_rounded_fraction_in_every_image(h, w, ratio, n, seed):
    if h * w < 2:
        with pytest.raises(ValueError, match="at least 2 patches"):
            random_mask(n, (h, w), ratio)
        return
    mask = random_mask(n, (h, w), ratio, generator=torch.Generator().manual_seed(seed))
    assert mask.shape == (n, 1, h, w) and mask.dtype == torch.bool
    expected = min(max(round(ratio * h * w), 1), h * w - 1)
    assert ((~mask).reshape(n, -1).sum(1) == expected).all()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, True, "0.5", float("nan")])
def test_mask_ratio_outside_open_unit_interval_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be a number in the open interval \(0, 1\)"):
        random_mask(2, (4, 4), ratio)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 4), w=st.integers(1, 4), ry=st.integers(1, 4), rx=st.integers(1, 4), seed=st.integers(0, 999))
def test_upsample_mask_matches_index_arithmetic(h, w, ry, rx, seed):
    mask = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(seed)) > 0.5
    big = upsample_mask(mask, (h * ry, w * rx))
    m = mask.numpy()
    ref = np.array([[[[m[b, 0, i // ry, j // rx] for j in range(w * rx)] for i in range(h * ry)]] for b in range(2)])
    assert np.array_equal(big.numpy(), ref)


def test_upsample_mask_rejects_sizes_that_do_not_tile():
    with pytest.raises(ValueError, match="does not tile"):
        upsample_mask(torch.ones(1, 1, 2, 2, dtype=torch.bool), (5, 4))


def test_patchify_round_trip_and_layout():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 6, 12)
    # patch (row 1, col 2) of image 1 holds x[1, :, 2:4, 4:6] in (y, x, channel) order
    assert torch.equal(p[1, 1 * 3 + 2], x[1, :, 2:4, 4:6].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(p, 2, 3, (2, 3)), x)


def _reference_loss(pred, img, mask, norm_pix):
    """Straightforward loop over patches, float64 numpy."""
    pred, img, mask = pred.double().numpy(), img.double().numpy(), mask.numpy()
    n, c, H, W = img.shape
    h, w = mask.shape[-2:]
    p = H // h
    losses = []
    for b in range(n):
        for i in range(h):
            for j in range(w):
                if mask[b, 0, i, j]:
                    continue  # visible: no loss
                t = img[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
                if norm_pix:
                    t = (t - t.mean()) / np.sqrt(t.var() + 1e-6)
                losses.append(((pred[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p] - t) ** 2).mean())
    return float(np.mean(losses))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_a_per_patch_reference(norm_pix):
    g = torch.Generator().manual_seed(0)
    img, pred = torch.randn(3, 2, 8, 8, generator=g) * 2 + 1, torch.randn(3, 2, 8, 8, generator=g)
    mask = random_mask(3, (4, 4), 0.6, generator=g)
    got = float(masked_patch_loss(pred, img, mask, norm_pix=norm_pix))
    assert got == pytest.approx(_reference_loss(pred, img, mask, norm_pix), rel=1e-5)


def test_loss_is_computed_on_hidden_patches_only():
    g = torch.Generator().manual_seed(1)
    img, pred = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    mask = random_mask(2, (2, 2), 0.5, generator=g)
    visible = upsample_mask(mask, (8, 8))
    base = masked_patch_loss(pred, img, mask)
    # arbitrary changes of the prediction on visible patches: loss unchanged, zero gradient there
    changed = torch.where(visible, torch.randn(2, 1, 8, 8, generator=g) * 100, pred)
    assert torch.equal(masked_patch_loss(changed, img, mask), base)
    pred_g = pred.clone().requires_grad_(True)
    masked_patch_loss(pred_g, img, mask).backward()
    assert torch.count_nonzero(pred_g.grad.masked_select(visible)) == 0
    assert torch.count_nonzero(pred_g.grad.masked_select(~visible)) > 0
    # and changing the hidden-patch prediction does change it
    assert not torch.equal(masked_patch_loss(torch.where(visible, pred, pred + 1), img, mask), base)
