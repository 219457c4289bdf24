"""Sliding-window inference equals a whole-volume forward where that is exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from largekernel.tasks.segmentation import sliding_window_inference
from largekernel.tasks.segmentation.inference import blend_weights, window_starts


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 50), window=st.integers(1, 20), overlap=st.sampled_from([0.0, 0.25, 0.5, 0.9]))
def test_window_starts_cover_every_position(size, window, overlap):
    starts = window_starts(size, window, overlap)
    w = min(window, size)
    covered = set()
    for s in starts:
        assert 0 <= s and s + w <= size
        covered.update(range(s, s + w))
    assert covered == set(range(size))
    assert starts == sorted(set(starts))


@settings(max_examples=10, deadline=None)
@given(dims=st.integers(1, 3), seed=st.integers(0, 1000), overlap=st.sampled_from([0.0, 0.25, 0.6]),
       blend=st.sampled_from(["gaussian", "constant"]), sw_batch=st.integers(1, 4))
def test_pointwise_model_windows_equal_whole_forward(dims, seed, overlap, blend, sw_batch):
    # a 1x1 convolution is translation-equivariant with no context: every window sees exactly
    # what the whole-volume pass sees, so the blend of windows must reproduce it
    g = torch.Generator().manual_seed(seed)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](2, 3, 1)
    sizes = [int(s) for s in torch.randint(5, 23 if dims < 3 else 13, (dims,), generator=g)]
    x = torch.randn(2, 2, *sizes, generator=g)
    window = [int(w) for w in torch.randint(2, 9, (dims,), generator=g)]
    with torch.no_grad():
        out = sliding_window_inference(x, conv, window, overlap=overlap, blend=blend, sw_batch_size=sw_batch)
        assert torch.allclose(out, conv(x), atol=1e-5)


def test_conv_model_with_window_covering_the_volume_is_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)).eval()
    x = torch.randn(1, 1, 7, 9, 6)
    with torch.no_grad():
        assert torch.allclose(sliding_window_inference(x, model, (7, 9, 6)), model(x), atol=1e-6)
        assert torch.allclose(sliding_window_inference(x, model, 32), model(x), atol=1e-6)


def test_interior_of_overlapping_windows_matches_for_a_local_model():
    # with constant blending, a voxel whose every covering window contains its whole receptive
    # field gets exactly the whole-volume value; check that on a 3x3 conv and half-overlapping windows
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        out = sliding_window_inference(x, conv, 8, overlap=0.5, blend="constant")
        ref = conv(x)
    # windows start at 0, 4, 8: each voxel's covering windows reach at least 1 voxel beyond it
    # except at window borders; voxels 1 away from every window border are exact
    starts = window_starts(16, 8, 0.5)
    good = [i for i in range(16) if all(not (s <= i < s + 8) or s < i < s + 7 or (i == 0 and s == 0)
                                        or (i == 15 and s + 8 == 16) for s in starts)]
    idx = torch.tensor(good)
    assert torch.allclose(out[..., idx[:, None], idx[None, :]], ref[..., idx[:, None], idx[None, :]], atol=1e-6)


def test_gaussian_weights_are_positive_and_peak_in_the_centre():
    w = blend_weights((9, 5), "gaussian")
    assert w.min() > 0
    assert w[4, 2] == w.max()


def test_bad_arguments_are_named():
    x = torch.randn(1, 1, 8, 8)
    conv = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="window_size"):
        sliding_window_inference(x, conv, (4, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(x, conv, 4, overlap=1.0)
    with pytest.raises(ValueError, match="sw_batch_size"):
        sliding_window_inference(x, conv, 4, sw_batch_size=0)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_inference(x, conv, 4, blend="max")
    with pytest.raises(ValueError, match="keep the spatial size"):
        sliding_window_inference(x, nn.Conv2d(1, 1, 3), 4)
