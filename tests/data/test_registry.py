"""The data-set registry: specs, bundled data sets, loaders, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from largekernel.data import (
    build_dataset,
    build_loaders,
    dataset_info,
    describe_datasets,
    evaluation_shard,
    list_datasets,
)
from largekernel.data import pathfinder as pf


@pytest.fixture
def tiny_pathfinder(monkeypatch):
    monkeypatch.setattr(
        pf, "PATHFINDER_SPLIT_SIZES", {s: {"train": 8, "val": 4, "test": 6} for s in pf.PATHFINDER_SIZES}
    )
    monkeypatch.setattr(pf, "_STATS_IMAGES", 8)
    monkeypatch.setattr(pf, "_STATS", {})


def test_list_datasets():
    names = list_datasets()
    for n in ("digits", "lfw-faces", "pathfinder", "pathfinder32", "pathfinder64", "pathfinder128", "folder:PATH"):
        assert n in names
    assert set(describe_datasets()) == set(names)


def test_digits_splits_match_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    splits = {s: build_dataset("digits", s, image_size=8) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 1797
    assert abs(len(splits["test"]) - 0.2 * 1797) < 10
    # at the native size every image is one of scikit-learn's (scaled to [0, 1]) with its label
    originals = {bunch.images[i].tobytes(): int(bunch.target[i]) for i in range(1797)}
    for ds in splits.values():
        assert ds.info.num_classes == 10 and ds.info.in_chans == 1
        for i in range(0, len(ds), 7):
            raw, y = ds.raw(i)
            key = (raw[0].double().numpy() * 16.0).round().tobytes()
            assert originals[key] == y
    # every class appears in each split (stratified)
    for ds in splits.values():
        labels = {int(ds.labels[i]) for i in range(len(ds))}
        assert labels == set(range(10))


def test_digits_normalisation_from_train_statistics():
    ds = build_dataset("digits", "train")
    assert ds.info.image_size == 32 and ds[0][0].shape == (1, 32, 32)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).double()
    assert abs(x.mean().item()) < 1e-5
    assert abs(x.std(unbiased=False).item() - 1.0) < 1e-5
    assert ds.info == dataset_info("digits")
    assert dataset_info("digits", 16).image_size == 16


def test_augmentation_reproducible_and_label_preserving():
    a = build_dataset("digits", "train", augment=True, seed=3)
    b = build_dataset("digits", "train", augment=True, seed=3)
    c = build_dataset("digits", "train", augment=True, seed=4)
    for d in (a, b, c):
        d.set_epoch(0)
    assert torch.equal(a[5][0], b[5][0]) and a[5][1] == c[5][1]
    assert not torch.equal(a[5][0], c[5][0])
    plain = build_dataset("digits", "train")
    assert torch.equal(plain[5][0], plain[5][0])
    assert not torch.equal(plain[5][0], a[5][0])


def test_lfw_faces():
    splits = {s: build_dataset("lfw-faces", s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [140, 20, 40]
    info = splits["train"].info
    assert info.num_classes == 2 and info.image_size == 32 and info.class_names == ("non-face", "face")
    assert int(splits["test"].labels.sum()) == 20  # balanced, stratified
    x, y = splits["train"][0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y in (0, 1)
    assert build_dataset("LFW", "test").info.name == "lfw-faces"


def test_pathfinder_specs(tiny_pathfinder):
    ds = build_dataset("pathfinder", "train")
    assert len(ds) == 8 and ds.info.image_size == 32 and ds.info.name == "pathfinder32"
    assert int(ds.labels.sum()) == 4
    assert build_dataset("pathfinder", "test", image_size=64).info.name == "pathfinder64"
    ds128 = build_dataset("Pathfinder128", "val")
    assert ds128[0][0].shape == (1, 128, 128)
    assert dataset_info("pathfinder64") == build_dataset("pathfinder64", "val").info
    # train and test are different images
    test = build_dataset("pathfinder32", "test")
    assert not any(torch.equal(ds.raw(i)[0], test.raw(i)[0]) for i in range(6))


def test_loaders_epochs_and_determinism():
    train, test, info = build_loaders("digits", batch_size=32, seed=1)
    train2, _, _ = build_loaders("digits", batch_size=32, seed=1)
    x1, y1 = next(iter(train))
    x1b, y1b = next(iter(train2))
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    assert x1.shape == (32, 1, 32, 32) and info.num_classes == 10
    x2, y2 = next(iter(train))  # second epoch: new order and augmentation
    assert not torch.equal(y1, y2) or not torch.equal(x1, x2)
    assert sum(len(y) for _, y in test) == len(test.dataset)
    xt, _ = next(iter(test))
    xt2, _ = next(iter(test))
    assert torch.equal(xt, xt2)  # evaluation: no shuffle, no augmentation


def test_errors():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*digits.*pathfinder"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match="unknown data set"):
        dataset_info("pathfinder48")
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", "dev")
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("digits", "train", image_size=0)
    with pytest.raises(ValueError, match="image_size"):
        dataset_info("digits", -3)
    with pytest.raises(TypeError, match="image_size"):
        build_dataset("digits", "train", image_size="32")
    with pytest.raises(TypeError, match="spec"):
        build_dataset(None, "train")
    with pytest.raises(ValueError, match="folder:PATH"):
        build_dataset("folder", "train")
    with pytest.raises(ValueError, match="batch_size"):
        build_loaders("digits", batch_size=0)
    with pytest.raises(ValueError, match="eval_split"):
        build_loaders("digits", batch_size=4, eval_split="train")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 50), world_size=st.integers(1, 7))
def test_evaluation_shards_partition_the_set_without_repeats(n, world_size):
    shards = [list(evaluation_shard(range(n), r, world_size).indices) for r in range(world_size)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # every sample exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("rank, world_size, match", [(2, 2, "rank"), (-1, 2, "rank"), (0, 0, "world_size")])
def test_evaluation_shard_rejects_bad_ranks(rank, world_size, match):
    with pytest.raises(ValueError, match=match):
        evaluation_shard(range(4), rank, world_size)


def test_distributed_loaders_shard_evaluation_exactly(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already running")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, test, _ = build_loaders("digits", batch_size=32, distributed=True)
        assert sum(len(y) for _, y in test) == len(build_dataset("digits", "test"))
        assert len(train.sampler) == len(build_dataset("digits", "train"))
    finally:
        dist.destroy_process_group()
