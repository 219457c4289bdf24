"""Kernel statistics: constructed kernels with known answers, NumPy references, train/deploy forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import largekernel
from largekernel.analysis.kernel_stats import (compare_kernel_stats, filter_stats, kernel_stats, plot_comparison,
                                               plot_energy_profiles, plot_kernels)


def _numpy_reference(w: np.ndarray, zero_tol: float, dup_tol: float):
    """Straightforward per-filter loops (independent of the vectorised implementation)."""
    filters = w.reshape(w.shape[0] * w.shape[1], -1).astype(np.float64)
    n, taps = filters.shape
    peak = np.abs(filters).max()
    zero = [np.abs(f).max() <= zero_tol * peak for f in filters]
    dup = [False] * n
    for i in range(n):
        for j in range(n):
            if i != j and not zero[i] and not zero[j]:
                cos = abs(filters[i] @ filters[j]) / (np.linalg.norm(filters[i]) * np.linalg.norm(filters[j]))
                if cos >= dup_tol:
                    dup[i] = True
    sparsity = np.mean(np.abs(filters) <= zero_tol * peak)
    s = np.linalg.svd(filters, compute_uv=False)
    p = s**2 / np.sum(s**2)
    p = p[p > 0]
    entropy = -np.sum(p * np.log(p)) / math.log(min(n, taps))
    degenerate = np.mean([a or b for a, b in zip(zero, dup)])
    return np.mean(zero), np.mean(dup), degenerate, sparsity, entropy


@settings(max_examples=25, deadline=None)
@given(c_out=st.integers(2, 6), c_in=st.integers(1, 3), k=st.sampled_from([3, 5]), seed=st.integers(0, 1000),
       n_dup=st.integers(0, 2), n_zero=st.integers(0, 2))
def test_filter_stats_match_numpy_reference(c_out, c_in, k, seed, n_dup, n_zero):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64)
    flat = w.view(-1, k, k)
    n = flat.shape[0]
    for i in range(min(n_dup, n - 1)):
        flat[i + 1] = -2.5 * flat[0]  # a scaled, negated copy is a near-duplicate
    for i in range(min(n_zero, n)):
        flat[n - 1 - i] = 1e-4 * flat[n - 1 - i]
    s = filter_stats(w, zero_tol=1e-2, dup_tol=0.99)
    ref = _numpy_reference(w.numpy(), 1e-2, 0.99)
    got = (s.near_zero_share, s.near_duplicate_share, s.degenerate_share, s.sparsity, s.variance_entropy)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert s.num_filters == c_out * c_in


def test_energy_profile_of_ring_kernels():
    w = torch.zeros(3, 1, 7, 7)
    w[0, 0, 3, 3] = 1.0                 # centre only: ring 0
    w[1, 0, 0, :] = 1.0                 # top row: ring 3
    w[2, 0, 2, 4] = w[2, 0, 4, 2] = 2.0  # ring 1
    s = filter_stats(w, groups=3)
    np.testing.assert_allclose(s.energy_profile, [1 / 3, 1 / 3, 0.0, 1 / 3])
    assert (s.energy_radius_50, s.energy_radius_90) == (1, 3)
    assert s.kind == "depthwise"


def test_variance_entropy_extremes():
    pattern = torch.randn(1, 1, 5, 5)
    rank_one = torch.cat([pattern * c for c in torch.linspace(0.5, 3, 16)])
    assert filter_stats(rank_one).variance_entropy == pytest.approx(0.0, abs=1e-9)
    noise = torch.randn(2000, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    assert filter_stats(noise, max_filters=512).variance_entropy > 0.99


def test_train_and_deploy_forms_and_comparison(tmp_path):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=0, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                     kernel_sizes=((3,), (13,), (7,), (0,)))
    deploy = largekernel.reparameterize(model.eval())
    train_stats = {s.name: s for s in kernel_stats(model)}
    deploy_stats = {s.name: s for s in kernel_stats(deploy)}
    # the training form has the dilated branches of the 13x13 block; the deploy form only the fused kernel
    assert any(".dwconv.dil_conv" in name or "dil" in name for name in train_stats)
    assert not any("dil" in name for name in deploy_stats)
    fused = [s for s in deploy_stats.values() if s.kernel_size == (13, 13)]
    assert len(fused) == 1 and fused[0].kind == "depthwise"
    rows = compare_kernel_stats(model, deploy)
    both = [r for r in rows if r["a"] is not None and r["b"] is not None and r["relative_change"] is not None]
    assert both, rows
    # the fused 13x13 kernel differs from the raw large-kernel branch (BN and branches folded in)
    lk = [r for r in both if r["a"].kernel_size == (13, 13)]
    assert lk and lk[0]["relative_change"] > 0
    plot_comparison(rows, tmp_path / "cmp.png")
    drawn = plot_kernels(deploy, tmp_path / "k.png", max_filters=4)
    assert drawn[0] == fused[0].name
    plot_energy_profiles(list(deploy_stats.values()), tmp_path / "e.png")
    for name in ("cmp.png", "k.png", "e.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_bad_input_names_the_argument(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="layers"):
        kernel_stats(model, layers=["nope"])
    with pytest.raises(ValueError, match="zero_tol"):
        filter_stats(torch.ones(2, 1, 3, 3), zero_tol=2.0)
    with pytest.raises(ValueError, match="weight"):
        filter_stats(torch.ones(3, 3))
    with pytest.raises(ValueError, match="layers"):
        plot_kernels(model, tmp_path / "x.png", ["nope"])
