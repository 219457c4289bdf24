"""The ``segmentation:`` block of a training config (``task: segment``), validated."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from largekernel.tasks.segmentation.model import DECODERS

__all__ = ["SegmentationOptions"]


@dataclass(frozen=True)
class SegmentationOptions:
    """Options of ``largekernel train --task segment`` (config key ``segmentation``).

    Attributes:
        decoder: ``"unet"`` or ``"unetpp"``.
        decoder_channels: Decoder channels per level, finest first (``None``: the encoder's).
        deep_supervision: Auxiliary losses on the coarser decoder outputs.
        out_indices: Backbone stages fed to the decoder (``None``: all).
        stem_channels: Full-resolution skip channels (0: none).
        ce_weight, dice_weight: Loss = ``ce_weight * CE + dice_weight * Dice``.
        window: Sliding-window side for evaluating inputs larger than it (``None``: the data
            set's patch size for 3-D data, whole images for 2-D).
        overlap: Sliding-window overlap in ``[0, 1)``.
        samples_per_epoch: Random training patches per epoch (patch data sets such as ``mni152-3d``).

    Example:
        >>> SegmentationOptions.from_mapping({"decoder": "unetpp"}).decoder
        'unetpp'
    """

    decoder: str = "unet"
    decoder_channels: tuple[int, ...] | None = None
    deep_supervision: bool = False
    out_indices: tuple[int, ...] | None = None
    stem_channels: int = 16
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    window: int | None = None
    overlap: float = 0.25
    samples_per_epoch: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "SegmentationOptions":
        """Validate ``data``; errors name the key as ``segmentation.<key>``.

        Raises:
            ValueError: Unknown key (with suggestions) or a bad value.
        """
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown option segmentation.{key}.{hint} Valid: {', '.join(names)}")
            values[key] = _check(key, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("decoder_channels", "out_indices"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(key: str, value: Any) -> Any:
    name = f"segmentation.{key}"
    if key == "decoder":
        if value not in DECODERS:
            raise ValueError(f"{name} must be one of {sorted(DECODERS)}, got {value!r}")
        return value
    if key in ("decoder_channels", "out_indices"):
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
            raise ValueError(f"{name} must be a list of ints or null, got {value!r}")
        if key == "decoder_channels" and any(v < 1 for v in value):
            raise ValueError(f"{name} must be positive, got {value!r}")
        return tuple(value)
    if key == "deep_supervision":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if key == "stem_channels":
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        return value
    if key in ("ce_weight", "dice_weight"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        return float(value)
    if key in ("window", "samples_per_epoch"):
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{name} must be a positive int or null, got {value!r}")
        return value
    if key == "overlap":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        return float(value)
    raise AssertionError(key)  # pragma: no cover - every field is handled above
