"""Segmentation data sets: generated shapes, MNI152 from nilearn, augmentation, bad pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largekernel.data.segmentation import (
    PairedDataset,
    RandomPatchDataset,
    SegmentationAugment,
    SegmentationInfo,
    build_segmentation_dataset,
)

INFO2 = SegmentationInfo("toy", 3, 1, 8, ("a", "b", "c"), (0.0,), (1.0,), 2)
INFO3 = SegmentationInfo("toy3", 3, 1, 8, ("a", "b", "c"), (0.0,), (1.0,), 3)


@pytest.mark.parametrize("spec,dims", [("shapes-2d", 2), ("shapes-3d", 3)])
def test_shapes_are_fixed_and_labelled(spec, dims):
    a = build_segmentation_dataset(spec, "test", image_size=13)
    b = build_segmentation_dataset(spec, "test", image_size=13, seed=5)
    x, y = a[3]
    assert x.shape == (1,) + (13,) * dims and y.shape == (13,) * dims and y.dtype == torch.long
    assert torch.equal(x, b[3][0]) and torch.equal(y, b[3][1])  # splits do not depend on seed
    raw, mask = a.raw(3)
    # intensities follow the labels: background 0.2, round 0.8, box 0.5 (plus noise)
    for k, level in enumerate((0.2, 0.8, 0.5)):
        if (mask == k).sum() > 3:
            assert float(raw[0][mask == k].mean()) == pytest.approx(level, abs=0.05)
    assert not torch.equal(a.raw(0)[1], build_segmentation_dataset(spec, "train", image_size=13).raw(0)[1])


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.zeros(12, 10, dtype=torch.long)
    mask[2:6, 3:9] = 1
    mask[7:10, 1:3] = 2
    image = mask.float().unsqueeze(0)  # image == mask: any mismatch in the transform shows
    ds = PairedDataset([image], [mask], INFO2,
                       SegmentationAugment(flip_axes=(0, 1), max_shift=3, intensity=(0.0, 0.0)), seed=1)
    changed = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        x, y = ds[0]
        assert torch.equal(x[0], y.float())
        changed += not torch.equal(y, mask)
        ds.set_epoch(epoch)
        assert torch.equal(ds[0][1], y)  # a pure function of (seed, epoch, index)
    assert changed >= 4


def test_random_patches_are_reproducible_and_inside():
    vol = torch.arange(20 * 18 * 16, dtype=torch.float32).reshape(1, 20, 18, 16)
    lab = (vol[0] % 3).long()
    ds = RandomPatchDataset([vol], [lab], patch_size=8, samples_per_epoch=5, info=INFO3, seed=2)
    first = [ds[i] for i in range(5)]
    assert all(x.shape == (1, 8, 8, 8) and y.shape == (8, 8, 8) for x, y in first)
    assert all(torch.equal((x[0] % 3).long(), y) for x, y in first)  # patch of the image and its mask
    assert torch.equal(ds[2][0], first[2][0])
    ds.set_epoch(1)
    assert not all(torch.equal(ds[i][0], first[i][0]) for i in range(5))


def test_mask_size_differing_from_image_is_refused():
    with pytest.raises(ValueError, match=r"mask \(index 1\) has size \(4, 5\).*spatial size \(4, 6\)"):
        PairedDataset([torch.zeros(1, 4, 5), torch.zeros(1, 4, 6)],
                      [torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, 5, dtype=torch.long)], INFO2)
    with pytest.raises(ValueError, match="masks has 1 entries but images has 2"):
        PairedDataset([torch.zeros(1, 4, 5)] * 2, [torch.zeros(4, 5, dtype=torch.long)], INFO2)
    with pytest.raises(ValueError, match="unknown segmentation data set"):
        build_segmentation_dataset("mni999", "train")


def test_mni152_labels_and_disjoint_splits():
    from largekernel.data.mni152 import MNI152_CLASSES, load_mni152_labels, load_mni152_maps

    image, labels, _ = load_mni152_labels()
    assert image.shape == labels.shape == (99, 117, 95)
    assert set(labels.ravel().tolist()) == {0, 1, 2}
    maps = load_mni152_maps()  # nilearn's files, loaded once (the labelling is what is checked)
    brain, gm, wm, gm_p, wm_p = (maps[k] for k in ("brain", "gm", "wm", "gm_p", "wm_p"))
    assert ((labels > 0) == brain).all()
    assert (labels[brain & gm & ~wm] == 1).all() and (labels[brain & wm & ~gm] == 2).all()
    both = brain & (gm == wm)
    assert (labels[both] == np.where(gm_p[both] >= wm_p[both], 1, 2)).all()
    train = build_segmentation_dataset("mni152-2d", "train", augment=True)
    test = build_segmentation_dataset("mni152-2d", "test")
    val = build_segmentation_dataset("mni152-2d", "val")
    assert train.info.class_names == MNI152_CLASSES and train.info.num_classes == 3
    assert train.info.slice_axis == 1  # coronal: predict cuts NIfTI volumes the same way
    # coronal slices, one per y plane holding brain: posterior 70 planes | 10 | frontal 37 planes
    planes = [y for y in range(117) if (labels[:, y] > 0).any()]
    assert len(train) == sum(y < 70 for y in planes) and len(val) == sum(70 <= y < 80 for y in planes)
    assert len(test) == sum(y >= 80 for y in planes)
    assert torch.equal(test.raw(0)[1], torch.from_numpy(labels[:, [y for y in planes if y >= 80][0]]))
    x, y = train[5]
    assert x.shape == (1, 99, 95) and y.shape == (99, 95)
    vol = build_segmentation_dataset("mni152-3d", "test")
    assert len(vol) == 1 and torch.equal(vol.raw(0)[1], torch.from_numpy(labels[:, 80:]))
    patches = build_segmentation_dataset("mni152-3d", "train", image_size=16, augment=True, samples_per_epoch=4)
    assert len(patches) == 4 and patches[0][0].shape == (1, 16, 16, 16)


def test_mni152_test_slab_is_not_a_copy_of_training_data():
    # the template is left/right symmetric, so a hemisphere split would test on training data;
    # the y split must not: no test slice equals a training slice
    train = build_segmentation_dataset("mni152-2d", "train")
    test = build_segmentation_dataset("mni152-2d", "test")
    train_images = [train.raw(i)[0] for i in range(len(train))]
    for j in range(len(test)):
        img = test.raw(j)[0]
        assert all(not torch.allclose(img, t, atol=1e-3) and not torch.allclose(img, t.flip(1), atol=1e-3)
                   for t in train_images)
