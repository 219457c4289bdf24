"""Pathfinder generator: determinism, balance, and labels checked by flood fill of the image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.measure import label as connected_components

from largekernel.data import pathfinder as pf
from largekernel.data.pathfinder import (
    PathfinderConfig,
    build_pathfinder,
    generate_pathfinder,
    generate_pathfinder_image,
    pathfinder_config,
)


@pytest.fixture(autouse=True)
def _small_stats(monkeypatch):
    # normalisation statistics from a few images keep the tests fast (the value is irrelevant here)
    monkeypatch.setattr(pf, "_STATS_IMAGES", 8)
    monkeypatch.setattr(pf, "_STATS", {})


def _dilate3(mask: np.ndarray) -> np.ndarray:
    """Independent 3x3 dilation (max over shifted copies)."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def _components(image: np.ndarray) -> np.ndarray:
    # a 3x3 dilation bridges the gaps between the dashes of one curve (gap <= 3 px Chebyshev)
    # but never joins two curves (kept >= 4 px apart); then 8-connected flood fill
    return connected_components(_dilate3(image > 0), connectivity=2)


@pytest.mark.parametrize("size,count", [(32, 40), (64, 16), (128, 8)])
def test_label_matches_connectivity_of_rendered_image(size, count):
    cfg = pathfinder_config(size)
    for i in range(count):
        label = i % 2
        s = generate_pathfinder_image(cfg, label, np.random.default_rng((7, i)), keep_curves=True)
        assert s.image.shape == (size, size) and s.image.dtype == np.uint8
        assert set(np.unique(s.image)) <= {0, 255}
        comp = _components(s.image)
        a, b = comp[s.dots[0]], comp[s.dots[1]]
        assert a > 0 and b > 0, "dots must be drawn"
        assert (a == b) == bool(label), f"size {size} sample {i}: connectivity disagrees with label"
        # both classes show the same number of separate curves
        assert comp.max() == cfg.num_curves
        # each curve is one component, and the curves' masks cover the image's ink
        union = np.zeros_like(s.image, dtype=bool)
        for mask in s.curves:
            assert connected_components(_dilate3(mask), connectivity=2).max() == 1
            union |= mask
        assert np.array_equal(union, s.image > 0)


def test_curves_never_touch():
    cfg = pathfinder_config(32)
    for i in range(20):
        s = generate_pathfinder_image(cfg, i % 2, np.random.default_rng(i), keep_curves=True)
        for j, a in enumerate(s.curves):
            grown = a.copy()
            for _ in range(pf.SEPARATION):
                grown = _dilate3(grown)
            for b in s.curves[j + 1 :]:
                assert not (grown & b).any()


def test_dots_sit_on_curve_ends():
    cfg = pathfinder_config(64)
    for i in range(10):
        s = generate_pathfinder_image(cfg, i % 2, np.random.default_rng(i), keep_curves=True)
        for dot in s.dots:
            r = math.floor(cfg.dot_radius)
            y, x = dot
            assert (s.image[y - r : y + r + 1, x - r : x + r + 1] > 0).sum() >= 5
        owners = [[k for k, m in enumerate(s.curves) if m[d]] for d in s.dots]
        assert all(len(o) == 1 for o in owners)
        assert (owners[0] == owners[1]) == bool(s.label)


def test_deterministic_per_index_and_balanced():
    a_img, a_lab = generate_pathfinder(32, 12, "train", data_seed=3)
    b_img, b_lab = generate_pathfinder(32, 12, "train", data_seed=3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    # image i doesn't depend on which others are generated
    c_img, c_lab = generate_pathfinder(32, 4, "train", data_seed=3, start=8)
    assert np.array_equal(c_img, a_img[8:]) and np.array_equal(c_lab, a_lab[8:])
    assert a_lab.sum() * 2 == len(a_lab)
    # other seeds and splits give other images
    d_img, _ = generate_pathfinder(32, 12, "test", data_seed=3)
    e_img, _ = generate_pathfinder(32, 12, "train", data_seed=4)
    assert not np.array_equal(a_img, d_img) and not np.array_equal(a_img, e_img)


def test_classes_have_matching_simple_statistics():
    # neither ink amount nor dot distance should give the label away
    images, labels = generate_pathfinder(32, 200, "val", data_seed=11)
    ink = (images > 0).reshape(len(images), -1).sum(1).astype(float)
    pos, neg = ink[labels == 1], ink[labels == 0]
    assert abs(pos.mean() - neg.mean()) < 0.25 * ink.std()
    cfg = pathfinder_config(32)
    dist = {0: [], 1: []}
    for i in range(120):
        s = generate_pathfinder_image(cfg, i % 2, np.random.default_rng((5, i)))
        dist[s.label].append(math.dist(s.dots[0], s.dots[1]))
    m0, m1 = np.mean(dist[0]), np.mean(dist[1])
    assert abs(m0 - m1) < 0.1 * max(m0, m1)
    # no small window ever sees both dots
    assert min(dist[0] + dist[1]) >= cfg.min_dot_distance * 32 - cfg.distance_tolerance


def test_curves_are_long_relative_to_image():
    for size in (32, 64, 128):
        cfg = pathfinder_config(size)
        assert cfg.curve_length >= 0.6 * size


def test_dataset_wrapper(monkeypatch):
    ds = build_pathfinder("val", num_images=10)
    assert len(ds) == 10 and ds.info.num_classes == 2 and ds.info.in_chans == 1
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 1
    raw, _ = ds.raw(3)
    ref = torch.from_numpy(generate_pathfinder(32, 1, "val", start=3)[0][0]).double() / 255
    assert torch.equal(raw[0].double(), ref)
    (mean,), (std,) = ds.info.mean, ds.info.std
    torch.testing.assert_close(x.double(), (raw.double() - mean) / std, rtol=1e-6, atol=1e-6)
    # the augmentation is an exact symmetry of the square
    aug = build_pathfinder("val", num_images=10, augment=True, seed=1)
    aug.set_epoch(0)
    xa, ya = aug[3]
    img = x[0]
    variants = [torch.rot90(img, k) for k in range(4)] + [torch.rot90(img, k).flip(-1) for k in range(4)]
    assert ya == y and any(torch.equal(xa[0], v) for v in variants)


def test_resized_and_native_sizes():
    ds = build_pathfinder("val", image_size=48, num_images=2)
    assert ds.info.image_size == 48 and ds.info.name == "pathfinder64"
    assert ds[0][0].shape == (1, 48, 48)
    ds = build_pathfinder("val", native_size=128, num_images=2)
    assert ds[1][0].shape == (1, 128, 128)


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        pathfinder_config(48)
    with pytest.raises(ValueError, match="label"):
        generate_pathfinder_image(pathfinder_config(32), 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="split"):
        generate_pathfinder(32, 2, "dev")
    with pytest.raises(ValueError, match="gap_length"):
        PathfinderConfig(size=32, num_curves=3, num_dashes=4, dash_length=3.0, gap_length=3.0)
    with pytest.raises(ValueError, match="num_curves"):
        PathfinderConfig(size=32, num_curves=1, num_dashes=4, dash_length=3.0)
    with pytest.raises(ValueError, match="num_images"):
        build_pathfinder("val", num_images=0)
    with pytest.raises(ValueError, match="split"):
        build_pathfinder("dev", num_images=2)


@pytest.mark.parametrize("size,count", [(32, 40), (64, 10)])
def test_easy_level_labels_match_connectivity(size, count):
    # the easy level changes only the geometry: labels must still be read off the image by flood fill
    cfg = pathfinder_config(size, "easy")
    hard = pathfinder_config(size)
    assert cfg.num_curves <= hard.num_curves and cfg.num_dashes < hard.num_dashes
    assert cfg.curve_length >= 0.6 * size
    for i in range(count):
        label = i % 2
        s = generate_pathfinder_image(cfg, label, np.random.default_rng((13, i)), keep_curves=True)
        comp = _components(s.image)
        a, b = comp[s.dots[0]], comp[s.dots[1]]
        assert a > 0 and b > 0
        assert (a == b) == bool(label), f"easy {size} sample {i}: connectivity disagrees with label"
        assert comp.max() == cfg.num_curves
        owners = [[k for k, m in enumerate(s.curves) if m[d]] for d in s.dots]
        assert all(len(o) == 1 for o in owners) and (owners[0] == owners[1]) == bool(label)


def test_easy_dataset_and_spec():
    from largekernel.data.registry import build_dataset, dataset_info

    ds = build_pathfinder("val", num_images=6, difficulty="easy")
    assert ds.info.name == "pathfinder32-easy" and [ds[i][1] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    raw, _ = ds.raw(2)
    ref = generate_pathfinder(32, 1, "val", start=2, difficulty="easy")[0][0]
    assert torch.equal(raw[0].double(), torch.from_numpy(ref).double() / 255)
    # a different image set than the default (hard) level
    assert not np.array_equal(ref, generate_pathfinder(32, 1, "val", start=2)[0][0])
    assert dataset_info("pathfinder32-easy").name == "pathfinder32-easy"
    assert dataset_info("Pathfinder-Easy").name == "pathfinder32-easy"
    assert dataset_info("pathfinder32").name == "pathfinder32"
    with pytest.raises(ValueError, match="difficulty"):
        pathfinder_config(32, "medium")
    with pytest.raises(ValueError, match="unknown data set"):
        build_dataset("pathfinder32-medium", "val")
