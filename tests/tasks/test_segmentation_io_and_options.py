"""Segmentation file I/O (PNG/NIfTI in and out) and the ``segmentation:`` options, against numpy/PIL/nibabel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from largekernel.tasks.segmentation.io import (
    is_nifti,
    mask_path,
    read_image,
    read_volume,
    write_nifti_mask,
    write_png_mask,
)
from largekernel.tasks.segmentation.options import SegmentationOptions


def test_mask_names_keep_the_source_stem(tmp_path):
    assert mask_path(tmp_path, "/data/brain.nii.gz", ".nii.gz") == tmp_path / "brain_mask.nii.gz"
    assert mask_path(tmp_path, "SCAN.NII", ".nii.gz") == tmp_path / "SCAN_mask.nii.gz"
    assert mask_path(tmp_path, "photo.v2.png", ".png") == tmp_path / "photo.v2_mask.png"
    assert [is_nifti(p) for p in ("a.nii", "a.NII.GZ", "a.png", "nii")] == [True, True, False, False]


def test_read_image_grey_and_rgb_match_pil(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb, mode="RGB").save(path)
    x = read_image(path, 3)
    assert x.shape == (3, 5, 7)
    np.testing.assert_allclose(x.numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    g = read_image(path, 1)
    assert g.shape == (1, 5, 7)
    np.testing.assert_allclose(g[0].numpy(), grey, atol=1e-7)


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.png", 3)
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match="1 or 3 input channels, not 2"):
        read_image(junk, 2)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(junk, 3)


def test_read_volume_scales_to_unit_range_and_drops_a_trailing_axis(tmp_path):
    data = np.random.default_rng(1).normal(5.0, 3.0, size=(4, 5, 6, 1)).astype(np.float32)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    vol, img = read_volume(path)
    expected = (data[..., 0] - data.min()) / (data.max() - data.min())
    assert vol.shape == (4, 5, 6)
    np.testing.assert_allclose(vol.numpy(), expected, atol=1e-6)
    assert np.allclose(img.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 7.0, np.float32), np.eye(4)), str(flat))
    assert torch.equal(read_volume(flat)[0], torch.zeros(3, 3, 3))  # constant volume: no 0/0


def test_read_volume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="volume not found"):
        read_volume(tmp_path / "missing.nii.gz")
    slab = tmp_path / "slab.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(slab))
    with pytest.raises(ValueError, match=r"must hold a 3-D volume, got shape \(4, 5\)"):
        read_volume(slab)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot read NIfTI volume"):
        read_volume(junk)


def test_png_mask_round_trip(tmp_path):
    mask = torch.randint(0, 5, (6, 9), generator=torch.Generator().manual_seed(2))
    path = write_png_mask(mask, tmp_path / "m.png")
    assert np.array_equal(np.asarray(Image.open(path)), mask.numpy().astype(np.uint8))
    with pytest.raises(ValueError, match="must be 2-D"):
        write_png_mask(mask[None], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at most 256 classes"):
        write_png_mask(torch.full((2, 2), 300), tmp_path / "bad.png")


def test_nifti_mask_keeps_the_reference_geometry(tmp_path):
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = [10.0, -4.0, 3.0]
    ref = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    ref.header.set_zooms((1.5, 2.0, 2.5))
    mask = torch.randint(0, 3, (4, 5, 6), generator=torch.Generator().manual_seed(3))
    out = nib.load(str(write_nifti_mask(mask, tmp_path / "m.nii.gz", ref)))
    assert np.array_equal(np.asarray(out.dataobj), mask.numpy()) and out.get_data_dtype() == np.uint8
    assert np.allclose(out.affine, affine) and out.header.get_zooms()[:3] == pytest.approx((1.5, 2.0, 2.5))
    plain = nib.load(str(write_nifti_mask(mask, tmp_path / "p.nii", None)))
    assert np.allclose(plain.affine, np.eye(4))
    with pytest.raises(ValueError, match="must be 3-D"):
        write_nifti_mask(mask[0], tmp_path / "bad.nii")


def test_options_from_mapping_and_back():
    opts = SegmentationOptions.from_mapping({
        "decoder": "unetpp", "decoder_channels": [32, 16], "deep_supervision": True, "out_indices": [0, 1],
        "stem_channels": 0, "ce_weight": 2, "dice_weight": 0.5, "window": 64, "overlap": 0.5,
        "samples_per_epoch": 100})
    assert opts.decoder_channels == (32, 16) and opts.ce_weight == 2.0 and isinstance(opts.ce_weight, float)
    d = opts.to_dict()
    assert d["decoder_channels"] == [32, 16] and d["out_indices"] == [0, 1]
    assert SegmentationOptions.from_mapping(d) == opts
    assert SegmentationOptions.from_mapping(None) == SegmentationOptions()
    assert SegmentationOptions().to_dict()["decoder_channels"] is None


@pytest.mark.parametrize("key, value, match", [
    ("decoder", "fpn", "segmentation.decoder must be one of"),
    ("decoder_channels", [], "segmentation.decoder_channels must be a list of ints or null"),
    ("decoder_channels", [16, True], "segmentation.decoder_channels must be a list of ints or null"),
    ("decoder_channels", [16, 0], "segmentation.decoder_channels must be positive"),
    ("out_indices", "0,1", "segmentation.out_indices must be a list of ints or null"),
    ("deep_supervision", 1, "segmentation.deep_supervision must be true or false"),
    ("stem_channels", -1, "segmentation.stem_channels must be a non-negative int"),
    ("stem_channels", 8.0, "segmentation.stem_channels must be a non-negative int"),
    ("ce_weight", -0.1, "segmentation.ce_weight must be a non-negative number"),
    ("dice_weight", float("inf"), "segmentation.dice_weight must be a non-negative number"),
    ("window", 0, "segmentation.window must be a positive int or null"),
    ("samples_per_epoch", True, "segmentation.samples_per_epoch must be a positive int or null"),
    ("overlap", 1.0, r"segmentation.overlap must be in \[0, 1\)"),
    ("overlap", False, r"segmentation.overlap must be in \[0, 1\)"),
    ("decoder_channel", [16], "unknown option segmentation.decoder_channel. Did you mean decoder_channels"),
])
def test_bad_options_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        SegmentationOptions.from_mapping({key: value})
