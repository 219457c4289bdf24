"""Decompression bombs, corrupt and truncated images: one error naming the file, or a skip."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from largekernel.data import build_dataset
from largekernel.data.folder import bad_images_policy, load_image
from largekernel.errors import ImageError
from largekernel.utils.images import check_image, open_image

from hardening_helpers import TINY, bomb_png, run_cli


def _folder(root, n=8, size=12, grey=True):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size) if grey else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_bomb_png_is_refused_by_name(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="decompression bomb") as info:
        check_image(bomb)
    assert str(bomb) in str(info.value) and info.value.path == bomb
    with pytest.raises(ImageError, match="bomb.png"):
        load_image(bomb, 1, 32)


def test_pillow_warning_range_is_an_error_too(tmp_path):
    # 10^8 pixels: above Pillow's limit (a warning there), below twice it (its hard error)
    bomb = bomb_png(tmp_path / "warn.png", 10_000, 10_000)
    with pytest.raises(ImageError, match="decompression bomb"):
        check_image(bomb)


def test_pixel_limit_can_be_set(tmp_path, monkeypatch):
    p = tmp_path / "ok.png"
    Image.new("L", (100, 100)).save(p)
    assert check_image(p) == "L"
    monkeypatch.setenv("LARGEKERNEL_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match="decompression bomb"):
        check_image(p)
    monkeypatch.setenv("LARGEKERNEL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match="LARGEKERNEL_MAX_IMAGE_PIXELS"):
        check_image(p)


def test_pillow_state_is_restored(tmp_path):
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with pytest.raises(ImageError):
        check_image(bomb_png(tmp_path / "b.png"))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_predict_on_a_bomb_exits_2_naming_it(tiny_run, tmp_path, caplog):
    bomb = bomb_png(tmp_path / "bomb.png")
    code, errors = run_cli(["predict", tiny_run, bomb], caplog)
    assert code == 2 and len(errors) == 1 and str(bomb) in errors[0] and "bomb" in errors[0]


def test_folder_with_a_bomb_is_refused_at_build(tmp_path):
    root = _folder(tmp_path / "imgs")
    bomb = bomb_png(root / "a" / "zz.png")
    with pytest.raises(ImageError) as info:
        build_dataset(f"folder:{root}", "train", image_size=8)
    assert str(bomb) in str(info.value) and "bad_images=skip" in str(info.value)


def test_truncated_image_is_reported_before_training_not_at_epoch_7(tmp_path):
    root = _folder(tmp_path / "imgs")
    bad = _truncate(root / "b" / "3.png")
    with Image.open(bad) as img:  # the header alone looks fine: only decoding finds the damage
        assert img.size == (12, 12)
    with pytest.raises(ImageError) as info:
        build_dataset(f"folder:{root}", "train", image_size=8)
    assert str(bad) in str(info.value) and "truncated" in str(info.value)


def test_truncated_image_can_be_skipped_with_a_warning(tmp_path, caplog):
    root = _folder(tmp_path / "imgs")
    bad = _truncate(root / "b" / "3.png")
    caplog.set_level(logging.WARNING, logger="largekernel")
    with bad_images_policy("skip"):
        parts = {s: build_dataset(f"folder:{root}", s, image_size=8) for s in ("train", "val", "test")}
    files = [f for d in parts.values() for f in d.files]
    assert len(files) == 15 and bad not in files
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for d in parts.values():  # every remaining sample loads
        for i in range(len(d)):
            x, y = d[i]
            assert x.shape == (1, 8, 8) and y in (0, 1)


def test_train_on_folder_with_corrupt_file(tmp_path, caplog):
    root = _folder(tmp_path / "imgs", n=24)
    bad = root / "a" / "5.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    argv = ["train", f"--data=folder:{root}", "--image-size", "16", *TINY, "train_subset=null", "eval_subset=null",
            "batch_size=8"]
    code, errors = run_cli([*argv, "--output", tmp_path / "r1"], caplog)
    assert code == 2 and len(errors) == 1 and str(bad) in errors[0]
    assert not (tmp_path / "r1" / "metrics.jsonl").exists()
    code, errors = run_cli([*argv, "--output", tmp_path / "r2", "--bad-images", "skip"], caplog)
    assert code == 0, errors


def test_open_image_names_missing_and_non_image_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        with open_image(tmp_path / "nope.png"):
            pass
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="text.png.*not a recognised image"):
        check_image(text)
