"""Pure-torch transforms and the shared data-set helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largekernel.data.base import DatasetInfo, TensorImageDataset, channel_stats, stratified_split
from largekernel.data.transforms import (
    Compose,
    Normalize,
    RandomAffine,
    RandomDihedral,
    RandomFlip,
    RandomShift,
    Resize,
    normalize,
    resize,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_resize_shapes_constant_and_range():
    x = torch.full((2, 5, 7), 0.3)
    y = resize(x, 16, "bicubic")
    assert y.shape == (2, 16, 16)
    torch.testing.assert_close(y, torch.full((2, 16, 16), 0.3))
    z = torch.rand(1, 8, 8)
    up = resize(z, 32, "bicubic")
    assert up.min() >= z.min() and up.max() <= z.max()  # clamped overshoot
    assert resize(z, 8) is z
    assert resize(z, (4, 6), "area").shape == (1, 4, 6)
    # area down-sampling by 2 is the 2x2 block mean (independent reference)
    ref = z.double().reshape(1, 4, 2, 4, 2).mean(dim=(2, 4))
    torch.testing.assert_close(resize(z.double(), 4, "area"), ref)


def test_normalize_matches_manual_float64():
    x = torch.rand(3, 4, 5, dtype=torch.float64)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ref = torch.stack([(x[c] - mean[c]) / std[c] for c in range(3)])
    torch.testing.assert_close(normalize(x, mean, std), ref)
    torch.testing.assert_close(Normalize(mean, std)(x), ref)


def test_affine_identity_and_determinism():
    x = torch.rand(1, 12, 12, dtype=torch.float64)
    ident = RandomAffine(degrees=0, translate=0, scale=(1, 1))
    torch.testing.assert_close(ident(x, _gen(0)), x)
    t = RandomAffine(degrees=15, translate=0.1, scale=(0.8, 1.2))
    assert torch.equal(t(x, _gen(3)), t(x, _gen(3)))
    assert not torch.equal(t(x, _gen(3)), t(x, _gen(4)))


def test_affine_translation_only_moves_mass():
    # no rotation, zoom 1: a blob away from the border is only moved, so its mass is unchanged
    x = torch.zeros(1, 16, 16, dtype=torch.float64)
    x[0, 6:10, 5:9] = 1.0
    t = RandomAffine(degrees=0, translate=0.125, scale=(1, 1))
    for s in range(5):
        out = t(x, _gen(s))
        torch.testing.assert_close(out.sum(), x.sum())
        assert out.min() >= 0 and out.max() <= 1


def test_random_shift_is_exact_translation():
    x = torch.arange(1.0, 65.0).reshape(1, 8, 8)
    out = RandomShift(2)(x, _gen(5))
    matches = []
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            ref = torch.zeros(1, 12, 12)
            ref[:, 2 + dy : 10 + dy, 2 + dx : 10 + dx] = x
            matches.append(torch.equal(out, ref[:, 2:10, 2:10]))
    assert sum(matches) == 1


def test_flips_and_dihedral():
    x = torch.rand(1, 5, 5)
    assert torch.equal(RandomFlip(horizontal=True, p=1.0)(x), x.flip(-1))
    assert torch.equal(RandomFlip(horizontal=True, vertical=True, p=1.0)(x), x.flip(-1).flip(-2))
    assert torch.equal(RandomFlip(horizontal=True, p=0.0)(x), x)
    variants = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    variants += [v.flip(-1) for v in variants]
    seen = set()
    for s in range(60):
        y = RandomDihedral()(x, _gen(s))
        idx = [i for i, v in enumerate(variants) if torch.equal(y, v)]
        assert len(idx) == 1
        seen.add(idx[0])
    assert seen == set(range(8))


def test_compose_and_bad_arguments():
    t = Compose([Resize(6), Normalize((0.5,), (0.5,))])
    assert t(torch.rand(1, 3, 3)).shape == (1, 6, 6)
    with pytest.raises(ValueError, match="size"):
        Resize(0)
    with pytest.raises(ValueError, match="mode"):
        resize(torch.rand(1, 4, 4), 8, "lanczos")
    with pytest.raises(TypeError, match="floating"):
        resize(torch.zeros(1, 4, 4, dtype=torch.uint8), 8)
    with pytest.raises(ValueError, match="shape"):
        resize(torch.rand(4, 4), 8)
    with pytest.raises(ValueError, match="std"):
        Normalize((0.0,), (0.0,))
    with pytest.raises(ValueError, match="per channel"):
        normalize(torch.rand(3, 2, 2), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="padding_mode"):
        RandomAffine(padding_mode="wrap")
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="p must"):
        RandomFlip(p=2.0)
    with pytest.raises(TypeError, match="callables"):
        Compose([3])


def test_stratified_split_disjoint_complete_stratified():
    labels = np.repeat(np.arange(4), [50, 30, 20, 7])
    parts = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    all_idx = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(all_idx.tolist()) == list(range(len(labels)))
    for c, n in zip(range(4), (50, 30, 20, 7)):
        n_test = (labels[parts["test"]] == c).sum()
        n_val = (labels[parts["val"]] == c).sum()
        assert abs(n_test - 0.2 * n) <= 1 and abs(n_val - 0.1 * n) <= 1 and n_val >= 1
    again = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(labels, (0.5, 0.1, 0.1))


def test_channel_stats_matches_numpy():
    x = torch.rand(6, 3, 4, 5)
    mean, std = channel_stats(x)
    arr = x.double().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean, arr.mean(1), rtol=1e-12)
    np.testing.assert_allclose(std, arr.std(1), rtol=1e-12)
    assert channel_stats(torch.zeros(2, 1, 3, 3))[1] == (1.0,)


def test_tensor_dataset_epoch_augmentation():
    info = DatasetInfo("toy", 2, 1, 8, ("a", "b"), (0.5,), (0.25,))
    images = torch.rand(4, 1, 8, 8)
    ds = TensorImageDataset(images, [0, 1, 0, 1], info, "train", RandomAffine(20, 0.1), seed=2)
    ds.set_epoch(0)
    a = ds[1][0]
    assert torch.equal(a, ds[1][0])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1][0])
    plain = TensorImageDataset(images, [0, 1, 0, 1], info, "test")
    torch.testing.assert_close(plain[-1][0], (images[3] - 0.5) / 0.25)
    with pytest.raises(IndexError):
        plain[4]
    with pytest.raises(ValueError, match="labels"):
        TensorImageDataset(images, [0, 1], info, "test")
    with pytest.raises(ValueError, match="split"):
        TensorImageDataset(images, [0, 1, 0, 1], info, "dev")
