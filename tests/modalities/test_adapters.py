"""Modality adapters against independent references (librosa's mel scale, numpy histograms, loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from largekernel.nn.adapters import (
    SeriesToImage,
    depth_views,
    fold_frames,
    log_mel_spectrogram,
    mfcc_sequence,
    normalise_points,
    unfold_frames,
    voxelize,
)


@pytest.mark.parametrize("freq", [1200.0, pytest.param(300.0, marks=pytest.mark.slow),
                                  pytest.param(3000.0, marks=pytest.mark.slow)])
def test_log_mel_peaks_at_the_tone_frequency(freq):
    import librosa

    sr = 16000
    t = np.arange(sr) / sr
    spec = log_mel_spectrogram(np.sin(2 * np.pi * freq * t), sr, n_mels=128, num_frames=64)
    assert spec.shape == (1, 128, 64)
    centres = librosa.mel_frequencies(n_mels=128 + 2, fmax=sr / 2)[1:-1]  # filter centres
    peak = int(spec[0, :, 10:50].mean(dim=1).argmax())
    assert abs(centres[peak] - freq) / freq < 0.08
    assert float(spec.max()) == pytest.approx(0.0, abs=1e-4)  # dB relative to the loudest bin
    assert float(spec.min()) >= -80.0 - 1e-4


def test_log_mel_pads_short_clips_and_rejects_bad_input():
    spec = log_mel_spectrogram(np.ones(800), 8000, n_mels=32, num_frames=128)
    assert spec.shape == (1, 32, 128)
    with pytest.raises(ValueError, match="sample_rate"):
        log_mel_spectrogram(np.ones(800), 0)
    with pytest.raises(ValueError, match="wave"):
        mfcc_sequence(np.ones((2, 800)), 8000)


def test_mfcc_frames_follow_the_hop():
    m = mfcc_sequence(np.random.default_rng(0).normal(size=16000), 16000, n_mfcc=20, hop_ms=10)
    assert m.shape == (20, 101)  # 1 s at a 10 ms hop, centred frames


def test_series_to_image_matches_manual_embedding():
    torch.manual_seed(0)
    m = SeriesToImage(in_chans=2, seq_len=45, patch_len=10, side=10)  # 5 windows of 20 values -> 20 each
    x = torch.randn(3, 2, 45)
    out = m(x)
    assert out.shape == (3, 1, 10, 10)
    xp = torch.nn.functional.pad(x, (0, 5))
    for b in range(3):
        for t in range(5):
            window = xp[b, :, 10 * t : 10 * (t + 1)].reshape(-1)  # channel 0's taps, then channel 1's
            token = m.proj.weight @ window + m.proj.bias
            assert torch.allclose(out[b, 0].reshape(-1)[20 * t : 20 * (t + 1)], token, atol=1e-6)
    out.sum().backward()
    assert m.proj.weight.grad is not None


def test_series_to_image_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"side\*\*2 .* sides that work: \[6, 12"):
        SeriesToImage(1, 120, 10, side=9)  # 12 windows; 81 is not a multiple of 12
    with pytest.raises(ValueError, match="seq_len"):
        SeriesToImage(1, 120, 10, side=12)(torch.randn(2, 1, 100))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 200), grid=st.integers(2, 12))
def test_voxelize_matches_numpy_histogram(seed, n, grid):
    p = np.random.default_rng(seed).uniform(-1, 1, size=(n, 3)).astype(np.float32)
    hist, _ = np.histogramdd(p, bins=grid, range=[(-1, 1)] * 3)
    np.testing.assert_array_equal(voxelize(p, grid)[0].numpy(), (hist > 0).astype(np.float32))


def test_depth_views_match_a_loop():
    p = np.random.default_rng(1).uniform(-1, 1, size=(300, 3)).astype(np.float32)
    size = 9
    ref = np.zeros((3, size, size), np.float32)
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for q in p:
            i = min(int((q[u] + 1) / 2 * size), size - 1)
            j = min(int((q[v] + 1) / 2 * size), size - 1)
            ref[axis, i, j] = max(ref[axis, i, j], (1 - q[axis]) / 2)
    np.testing.assert_allclose(depth_views(p, size).numpy(), ref, atol=1e-6)


def test_normalise_points_unit_ball():
    p = normalise_points(np.random.default_rng(0).normal(3, 5, size=(50, 3)))
    assert torch.allclose(p.mean(0), torch.zeros(3), atol=1e-5)
    assert p.norm(dim=1).max().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="points"):
        normalise_points(np.zeros((5, 2)))


def test_fold_frames_layout_and_inverse():
    v = torch.randn(2, 3, 8, 5, 7)
    img = fold_frames(v, rows=2, cols=4)
    assert img.shape == (2, 3, 10, 28)
    for t in range(8):
        r, c = divmod(t, 4)
        assert torch.equal(img[:, :, 5 * r : 5 * (r + 1), 7 * c : 7 * (c + 1)], v[:, :, t])
    assert torch.equal(unfold_frames(img, 2, 4), v)
    with pytest.raises(ValueError, match="rows \\* cols"):
        fold_frames(v, 3, 3)
