"""largekernel backbones as MONAI ``FlexibleUNet`` encoders (its ``BaseEncoder`` protocol).

:func:`register_with_monai` adds :class:`LargeKernelEncoder` to MONAI's ``FLEXUNET_BACKBONE``
registry (the documented way to plug in an encoder). Then::

    FlexibleUNet(in_channels=1, out_channels=3, backbone="unireplknet_a", spatial_dims=2)

builds a U-Net whose encoder is largekernel's ``unireplknet_a``. The encoder returns five maps at
strides 2, 4, 8, 16, 32: the stem's stride-2 map (stride 2 and 4 for LSNet) and the stages, as
FlexibleUNet expects. Registered backbones: UniRepLKNet (2-D, and 3-D through its
``spatial_dims``), RepLKNet and LSNet (2-D). ConvNeXt and InceptionNeXt are not registered: their
patchify stem has no stride-2 map, and FlexibleUNet fixes the channels of every level at
registration, before ``in_channels`` is known.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = ["LargeKernelEncoder", "register_with_monai", "MONAI_FAMILIES"]

logger = logging.getLogger(__name__)

#: Name patterns of the models registered as FlexibleUNet backbones.
MONAI_FAMILIES = ("unireplknet_*", "replknet_*", "lsnet_*")

# model name -> (stem levels, channels of the five levels)
_LEVELS: dict[str, tuple[int, tuple[int, ...]]] = {}


# the patterns of the last register_with_monai() call
_patterns: tuple[str, ...] = MONAI_FAMILIES


def _levels(name: str) -> tuple[int, tuple[int, ...]]:
    """(stem levels, channels of the levels at strides 2..32) of model ``name``."""
    if name not in _LEVELS:
        from largekernel.models.registry import create_model

        with torch.device("meta"):  # no memory, no arithmetic: only the layout is read
            model = create_model(name, num_classes=0)
        stages = model.feature_info.entries
        stem = [s for s in model._stem_level_specs() if s.reduction < stages[0]["reduction"]]
        levels = [(s.reduction, s.num_chs) for s in stem] + [(e["reduction"], e["num_chs"]) for e in stages]
        if [r for r, _ in levels[:5]] != [2, 4, 8, 16, 32]:
            raise ValueError(f"{name} has no levels at strides 2..32: {[r for r, _ in levels]}")
        _LEVELS[name] = (len(stem), tuple(c for _, c in levels[:5]))
    return _LEVELS[name]


def _names() -> list[str]:
    from largekernel.models.registry import list_models

    return [n for pattern in _patterns for n in list_models(pattern)]


def _base_encoder() -> type:
    try:
        from monai.networks.blocks import BaseEncoder
    except ImportError as exc:  # pragma: no cover - MONAI is optional
        raise ImportError("the MONAI integration needs monai: pip install monai") from exc
    return BaseEncoder


class LargeKernelEncoder(nn.Module):
    """A largekernel model as a five-level encoder: ``forward(x)`` returns maps at strides 2..32.

    Args:
        model_name: A name from :data:`MONAI_FAMILIES` (e.g. ``"unireplknet_a"``).
        spatial_dims: 2, or 3 for UniRepLKNet (volumes ``(N, C, D, H, W)``).
        in_channels: Input channels.
        pretrained: Must be ``False`` (nothing is downloaded); load weights with
            ``largekernel.load_checkpoint`` on ``encoder.backbone``.
        **model_kwargs: Further options of the largekernel model (``dims``, ``depths``, ...).

    Example:
        >>> enc = LargeKernelEncoder("lsnet_t", spatial_dims=2, in_channels=1)
        >>> [f.shape[1] for f in enc(torch.zeros(1, 1, 64, 64))]
        [16, 32, 64, 128, 256]
    """

    def __init__(self, model_name: str, spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = False,
                 **model_kwargs: Any):
        super().__init__()
        from largekernel.models.registry import create_model

        if pretrained:
            raise ValueError("pretrained=True is not supported offline; load a checkpoint into encoder.backbone")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        stem, _ = _levels(model_name)
        kwargs = dict(model_kwargs, features_only=True, stem_features=stem, out_indices=tuple(range(5)),
                      in_chans=in_channels)
        if spatial_dims == 3:
            if not model_name.startswith("unireplknet_"):
                raise ValueError(
                    f"spatial_dims=3 needs a 3-D backbone (unireplknet_*), got backbone {model_name!r}"
                )
            kwargs["spatial_dims"] = 3
        self.backbone = create_model(model_name, **kwargs)
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    # ---- MONAI's BaseEncoder protocol (one entry per registered backbone) --------------------
    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return _names()

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [5 for _ in _names()]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return [_levels(n)[1] for n in _names()]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [dict(model_name=n, spatial_dims=2, in_channels=3, pretrained=False) for n in _names()]


def register_with_monai(patterns: tuple[str, ...] | list[str] = MONAI_FAMILIES) -> list[str]:
    """Register :class:`LargeKernelEncoder` with MONAI's ``FLEXUNET_BACKBONE`` (idempotent).

    Args:
        patterns: Shell patterns of the largekernel models to register (default: every UniRepLKNet,
            RepLKNet and LSNet); each must select models of those families.

    Returns:
        The backbone names now usable as ``FlexibleUNet(backbone=...)``.

    Example:
        >>> from monai.networks.nets import FlexibleUNet
        >>> names = register_with_monai(["unireplknet_a"])
        >>> net = FlexibleUNet(in_channels=1, out_channels=2, backbone="unireplknet_a", spatial_dims=2)
    """
    global _patterns
    patterns = tuple(patterns)
    bad = [p for p in patterns if not any(p.startswith(f[:-1]) for f in MONAI_FAMILIES)]
    if bad or not patterns:
        raise ValueError(f"patterns must select models of {MONAI_FAMILIES}, got {list(patterns)!r}")
    _patterns = patterns
    base = _base_encoder()
    if not issubclass(LargeKernelEncoder, base):
        # MONAI's protocol is an ABC; registering it as a virtual base keeps this module importable without MONAI
        base.register(LargeKernelEncoder)
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    FLEXUNET_BACKBONE.register_class(LargeKernelEncoder)
    return LargeKernelEncoder.get_encoder_names()
