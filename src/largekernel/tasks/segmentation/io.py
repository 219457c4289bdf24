"""Reading inputs for and writing masks from segmentation models: PNG (2-D) and NIfTI (volumes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["is_nifti", "read_image", "read_volume", "write_png_mask", "write_nifti_mask", "mask_path"]


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def mask_path(out_dir: Path, source: str | Path, suffix: str) -> Path:
    """``out_dir / <source stem>_mask<suffix>`` (``.nii.gz`` counted as one suffix)."""
    name = Path(source).name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = Path(name).stem
    return out_dir / f"{name}_mask{suffix}"


def read_image(path: str | Path, in_chans: int) -> torch.Tensor:
    """A ``C x H x W`` float image in [0, 1] (any size) from a PNG/JPEG/... file.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Unreadable image or a model with neither 1 nor 3 input channels.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if in_chans not in (1, 3):
        raise ValueError(f"images can feed models with 1 or 3 input channels, not {in_chans}")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if in_chans == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    x = torch.from_numpy(arr)
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def read_volume(path: str | Path) -> tuple[torch.Tensor, Any]:
    """``(X x Y x Z float volume min-max scaled to [0, 1], nibabel image)`` from a NIfTI file.

    The MNI152 training data are the template scaled to [0, 1], so other volumes are brought to
    the same range.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Unreadable file, or not a 3-D volume (a trailing axis of length 1 is dropped).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(), dtype=np.float32)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"cannot read NIfTI volume {path}: {err}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} must hold a 3-D volume, got shape {data.shape}")
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    data = np.nan_to_num((data - lo) / (hi - lo) if hi > lo else np.zeros_like(data))
    return torch.from_numpy(data), img


def write_png_mask(mask: torch.Tensor, path: str | Path) -> Path:
    """Save an ``H x W`` class-index mask as an 8-bit grey PNG (pixel value = class index)."""
    from PIL import Image

    if mask.dim() != 2:
        raise ValueError(f"a PNG mask must be 2-D, got shape {tuple(mask.shape)}")
    if int(mask.max()) > 255:
        raise ValueError("PNG masks hold at most 256 classes")
    path = Path(path)
    Image.fromarray(mask.to(torch.uint8).cpu().numpy(), mode="L").save(path)
    return path


def write_nifti_mask(mask: torch.Tensor, path: str | Path, reference: Any | None = None) -> Path:
    """Save an ``X x Y x Z`` class-index mask as NIfTI (uint8), with ``reference``'s affine/header."""
    import nibabel as nib

    if mask.dim() != 3:
        raise ValueError(f"a NIfTI mask must be 3-D, got shape {tuple(mask.shape)}")
    data = mask.to(torch.uint8).cpu().numpy()
    affine = reference.affine if reference is not None else np.eye(4)
    out = nib.Nifti1Image(data, affine)
    if reference is not None:
        out.header.set_zooms(reference.header.get_zooms()[:3])
    out.set_data_dtype(np.uint8)
    path = Path(path)
    nib.save(out, str(path))
    return path
