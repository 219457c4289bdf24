"""ERF: equality with a straightforward re-implementation of RepLKNet's procedure, ordering, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import largekernel
from largekernel.analysis.erf import DEFAULT_THRESHOLDS, area_ratio, erf, plot_erf_comparison, rescale

TINY = dict(num_classes=0, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (13,), (3,)),
            layer_scale_init_value=1.0)


def _reference_erf(model_kwargs, state, images, stage):
    """RepLKNet's loop, one image at a time, through an independently built features_only model."""
    feats = largekernel.create_model("unireplknet_a", features_only=True, out_indices=(stage,),
                                     **{k: v for k, v in model_kwargs.items() if k != "num_classes"})
    missing, _ = feats.load_state_dict(state, strict=False)
    assert not missing
    feats.eval()
    total = np.zeros(images.shape[-2:], dtype=np.float64)
    for i in range(images.shape[0]):
        x = images[i : i + 1].clone().requires_grad_(True)
        out = feats(x)[0]
        h, w = out.shape[-2:]
        central = torch.relu(out[:, :, h // 2, w // 2]).sum()
        (grad,) = torch.autograd.grad(central, x)
        total += torch.relu(grad).sum(dim=(0, 1)).double().numpy()
    return total / images.shape[0]


def _reference_area(scores: np.ndarray, t: float) -> int:
    """Smallest odd centred square holding >= t of log10(1+x)/max (brute force, NumPy)."""
    data = np.log10(1 + scores)
    data = data / data.max()
    h, w = data.shape
    for r in range(0, min(h, w)):
        top, left = h // 2 - r, w // 2 - r
        if top < 0 or left < 0 or h // 2 + r >= h or w // 2 + r >= w:
            return 2 * (r - 1) + 1
        if data[top : h // 2 + r + 1, left : w // 2 + r + 1].sum() >= t * data.sum() * (1 - 1e-12):
            return 2 * r + 1
    return min(h, w) if min(h, w) % 2 else min(h, w) - 1


@pytest.mark.parametrize("stage", [-1, 1])
def test_erf_equals_straightforward_implementation(stage):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **TINY)
    model.train()  # erf must switch to eval (BN running stats) and restore the mode
    images = torch.randn(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    result = erf(model, images, stage=stage, batch_size=2)
    assert model.training
    expected = _reference_erf(TINY, model.state_dict(), images, stage % 4)
    assert result.scores.dtype == torch.float64
    assert result.scores.shape == (48, 48)
    np.testing.assert_allclose(result.scores.numpy(), expected, rtol=1e-4, atol=1e-7 * expected.max())
    assert result.num_images == 5 and result.stage == stage % 4
    for t in DEFAULT_THRESHOLDS:
        a = result.area_ratio(t)
        side = _reference_area(expected, t)
        assert a.side == side
        assert math.isclose(a.area_ratio, side * side / 48**2)
        assert math.isclose(a.side_ratio, side / 48)


def test_erf_accepts_an_iterable_of_labelled_images():
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **TINY)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    pairs = [(images[i], i) for i in range(4)]
    a = erf(model, pairs)
    b = erf(model, images, batch_size=4)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-6 * float(b.scores.max()))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 15), w=st.integers(1, 15), t=st.sampled_from([0.05, 0.2, 0.3, 0.5, 0.99, 1.0]),
       seed=st.integers(0, 10_000))
def test_area_ratio_matches_brute_force(h, w, t, seed):
    scores = torch.rand(h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) ** 4 * 50
    got = area_ratio(scores, t)
    assert got.side == _reference_area(scores.numpy(), t)
    assert got.side % 2 == 1 and got.side <= min(h, w)


def test_rescale_is_log_then_max():
    x = torch.tensor([[0.0, 3.0], [99.0, 9.0]], dtype=torch.float64)
    expected = np.log10(1 + x.numpy()) / 2.0
    np.testing.assert_allclose(rescale(x).numpy(), expected)


def test_larger_kernels_give_larger_erfs_at_random_init():
    # equal depth, random init, layer scale 1 (ConvNeXt's LN after the depthwise conv keeps the
    # branch's scale independent of K), averaged over 10 images; 224 px so that the last stage
    # still has a 7x7 map
    images = torch.randn(10, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ratios = []
    for k in (3, 7, 13, 31):
        torch.manual_seed(0)
        model = largekernel.create_model("convnext_atto", num_classes=0, depths=(1, 1, 3, 1), dims=(8, 16, 32, 64),
                                         kernel_sizes=k, ls_init_value=1.0)
        ratios.append(erf(model, images, stage=-1, batch_size=10).area_ratio(0.5).area_ratio)
    assert ratios[0] < ratios[1] < ratios[2] < ratios[3], ratios


def test_bad_input_names_the_argument(tmp_path):
    model = largekernel.create_model("unireplknet_a", **TINY)
    with pytest.raises(ValueError, match="stage"):
        erf(model, torch.randn(1, 3, 32, 32), stage=4)
    with pytest.raises(ValueError, match="stage"):
        erf(model, torch.randn(1, 3, 32, 32), stage=-5)
    with pytest.raises(ValueError, match="image size .* smaller than the stride 32"):
        erf(model, torch.randn(1, 3, 16, 16), stage=3)
    with pytest.raises(ValueError, match="empty"):
        erf(model, torch.randn(0, 3, 32, 32))
    with pytest.raises(ValueError, match="threshold"):
        area_ratio(torch.ones(3, 3), 0.0)
    with pytest.raises(TypeError, match="model"):
        erf("unireplknet_a", torch.randn(1, 3, 32, 32))


def test_plots_write_png(tmp_path):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **TINY)
    images = torch.randn(2, 3, 32, 32)
    r1 = erf(model, images, label="a")
    r2 = erf(model, images, stage=1, label="b")
    r1.plot(tmp_path / "one.png")
    plot_erf_comparison([r1, r2], tmp_path / "two.png")
    for name in ("one.png", "two.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = r1.to_dict()
    assert set(summary["area_ratios"]) == {"0.2", "0.3", "0.5", "0.99"}
