"""``folder:PATH`` image folders (Pillow), layouts, channel detection and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from largekernel.data import build_dataset, dataset_info
from largekernel.data.folder import load_image


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _make_folder(root, classes=("cat", "dog"), per_class=10, size=(12, 16), colour=True, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per_class):
            shape = size + ((3,) if colour else ())
            _save(root / c / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_flat_folder_split_and_channels(tmp_path):
    root = _make_folder(tmp_path / "rgb")
    parts = {s: build_dataset(f"folder:{root}", s, image_size=8) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    files = [f for d in parts.values() for f in d.files]
    assert len(set(files)) == 20
    info = parts["train"].info
    assert info.in_chans == 3 and info.class_names == ("cat", "dog") and info.image_size == 8
    x, y = parts["test"][0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y in (0, 1)
    assert dataset_info(f"folder:{root}", 8) == info
    grey = _make_folder(tmp_path / "grey", colour=False)
    assert build_dataset("folder", "train", root=str(grey)).info.in_chans == 1
    assert build_dataset(f"folder:{grey}", "train").info.image_size == 64  # default size


def test_train_test_layout(tmp_path):
    _make_folder(tmp_path / "train", per_class=8)
    _make_folder(tmp_path / "test", per_class=3, seed=1)
    train = build_dataset(f"folder:{tmp_path}", "train", image_size=8)
    val = build_dataset(f"folder:{tmp_path}", "val", image_size=8)
    test = build_dataset(f"folder:{tmp_path}", "test", image_size=8)
    assert len(train) + len(val) == 16 and len(val) == 2 and len(test) == 6
    assert all("test" in str(f) for f in test.files)
    assert not set(val.files) & set(train.files)


def test_load_image_resizes_shorter_side_and_centre_crops(tmp_path):
    # left half black, right half white, 20 x 40: after resize to 10 x 20 and a centre crop of
    # 10 x 10 the crop covers columns 5..14 of the resized image: half dark, half bright
    arr = np.zeros((20, 40), dtype=np.uint8)
    arr[:, 20:] = 255
    _save(tmp_path / "a.png", arr)
    x = load_image(tmp_path / "a.png", 1, 10)
    assert x.shape == (1, 10, 10)
    assert torch.allclose(x[0, :, :4], torch.zeros(10, 4), atol=1e-3)
    assert torch.allclose(x[0, :, 6:], torch.ones(10, 4), atol=1e-3)
    rgb = load_image(tmp_path / "a.png", 3, 10)
    assert rgb.shape == (3, 10, 10) and torch.equal(rgb[0], rgb[2])
    # no resize needed: exact pixel values
    exact = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    _save(tmp_path / "b.png", exact)
    torch.testing.assert_close(load_image(tmp_path / "b.png", 1, 8)[0].double(), torch.from_numpy(exact / 255.0))


def test_augmented_folder(tmp_path):
    root = _make_folder(tmp_path / "d")
    ds = build_dataset(f"folder:{root}", "train", image_size=16, augment=True, seed=0)
    ds.set_epoch(0)
    a = ds[0][0]
    ds.set_epoch(0)
    assert torch.equal(a, ds[0][0]) and a.shape == (3, 16, 16)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(f"folder:{tmp_path / 'nope'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        build_dataset(f"folder:{tmp_path / 'empty'}", "train")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        build_dataset(f"folder:{tmp_path / 'noimg'}", "train")
    bad = _make_folder(tmp_path / "bad", per_class=3)
    (bad / "cat" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        build_dataset(f"folder:{bad}", "train")
    with pytest.raises(ValueError, match="folder:PATH"):
        build_dataset("folder:", "train")


def test_truncated_image_is_named(tmp_path):
    root = _make_folder(tmp_path / "trunc", per_class=3, size=(32, 32))
    victim = root / "dog" / "1.png"
    victim.write_bytes(victim.read_bytes()[:60])  # header intact, pixel data cut
    def load_everything():
        # the file may fall in any split; the error must come (naming it) wherever it is read
        for split in ("train", "val", "test"):
            ds = build_dataset(f"folder:{root}", split, image_size=8)
            for i in range(len(ds)):
                ds[i]

    with pytest.raises(ValueError, match="1.png"):
        load_everything()
