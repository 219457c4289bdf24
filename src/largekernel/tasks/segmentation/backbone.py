"""Building and checking ``features_only`` backbones for the segmentation decoders.

A backbone is any module whose ``forward`` returns a list of feature maps and which carries a
``feature_info`` with ``channels()`` and ``reduction()`` (largekernel's ``features_only`` models,
timm's ``features_only`` models, :class:`~largekernel.tasks.segmentation.encoder.LKEncoder`).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

__all__ = ["ENCODER_NAME", "build_backbone", "backbone_spatial_dims", "backbone_channels_reductions"]

#: Backbone name of the built-in N-d encoder (:class:`LKEncoder`).
ENCODER_NAME = "lk_encoder"

_CONV_DIMS = ((nn.Conv3d, 3), (nn.Conv2d, 2), (nn.Conv1d, 1))


def backbone_spatial_dims(backbone: nn.Module) -> int | None:
    """The number of spatial dims a backbone works on.

    Read from a ``spatial_dims`` attribute when there is one, else from the first convolution
    found (``nn.Conv1d/2d/3d`` and subclasses such as ``largekernel.nn.Conv2d``); ``None`` if
    neither tells.
    """
    dims = getattr(backbone, "spatial_dims", None)
    if isinstance(dims, int):
        return dims
    for module in backbone.modules():
        for cls, nd in _CONV_DIMS:
            if isinstance(module, cls):
                return nd
    return None


def backbone_channels_reductions(backbone: nn.Module) -> tuple[list[int], list[int]]:
    """``(channels, reductions)`` of the backbone's feature maps, from its ``feature_info``.

    Raises:
        TypeError: ``backbone`` has no usable ``feature_info`` (not a ``features_only`` model).
        ValueError: Reductions that do not increase or are not powers of two times the first.
    """
    info = getattr(backbone, "feature_info", None)
    if info is None or not callable(getattr(info, "channels", None)) or not callable(
            getattr(info, "reduction", None)):
        raise TypeError(f"backbone must be a features_only model with feature_info.channels() and "
                        f".reduction(), got {type(backbone).__name__}")
    channels = [int(c) for c in info.channels()]
    reductions = [int(r) for r in info.reduction()]
    if not channels or len(channels) != len(reductions):
        raise ValueError(f"backbone feature_info is inconsistent: channels {channels}, reductions {reductions}")
    if any(b <= a for a, b in zip(reductions, reductions[1:])):
        raise ValueError(f"backbone feature reductions must increase (order out_indices ascending), "
                         f"got {reductions}")
    return channels, reductions


def build_backbone(name: str, *, spatial_dims: int, in_chans: int, out_indices: Sequence[int] | None = None,
                   kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a ``features_only`` backbone by name.

    Args:
        name: ``"lk_encoder"`` (the built-in N-d encoder) or any name of
            ``largekernel.list_models()`` that supports ``features_only``.
        spatial_dims: Spatial dims the decoder works on; the backbone must match.
        in_chans: Input channels.
        out_indices: Stages to use (default: all).
        kwargs: Extra backbone options (``dims``, ``kernel_sizes``, ...).

    Raises:
        ValueError: Unknown name, ``out_indices`` out of range, or a backbone with another
            number of spatial dims than ``spatial_dims``.

    Example:
        >>> enc = build_backbone("lk_encoder", spatial_dims=3, in_chans=1, out_indices=(0, 1))
        >>> enc.feature_info.channels()
        [16, 32]
    """
    kwargs = dict(kwargs or {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a model name, got {name!r}")
    if out_indices is not None:
        out_indices = _check_out_indices(out_indices)
    if name == ENCODER_NAME:
        from largekernel.tasks.segmentation.encoder import LKEncoder

        if out_indices is not None:
            _check_range(out_indices, 4, name)
            kwargs["out_indices"] = out_indices
        return LKEncoder(spatial_dims, in_chans, **kwargs)
    import inspect

    from largekernel.models.registry import create_model, model_entrypoint

    probe_kwargs = {k: v for k, v in kwargs.items() if k not in ("out_indices", "features_only")}
    if "spatial_dims" in inspect.signature(model_entrypoint(name)).parameters:
        # N-d families (UniRepLKNet) build the decoder's dimensionality directly
        probe_kwargs.setdefault("spatial_dims", spatial_dims)
    model = create_model(name, features_only=True, in_chans=in_chans, **probe_kwargs)
    stages = len(model.feature_info)
    if out_indices is not None:
        _check_range(out_indices, stages, name)
        model = create_model(name, features_only=True, in_chans=in_chans, out_indices=out_indices,
                             **probe_kwargs)
    nd = backbone_spatial_dims(model)
    if nd is not None and nd != spatial_dims:
        raise ValueError(f"backbone {name!r} is {nd}-D but spatial_dims={spatial_dims}: use a "
                         f"{spatial_dims}-D backbone (e.g. {ENCODER_NAME!r}) or spatial_dims={nd}")
    return model


def _check_out_indices(out_indices: Sequence[int]) -> tuple[int, ...]:
    if isinstance(out_indices, (str, bytes)) or not hasattr(out_indices, "__iter__"):
        raise ValueError(f"out_indices must be a list of stage indices, got {out_indices!r}")
    values = tuple(out_indices)
    if not values or any(not isinstance(i, int) or isinstance(i, bool) for i in values):
        raise ValueError(f"out_indices must be a non-empty list of ints, got {list(values)!r}")
    return values


def _check_range(out_indices: Sequence[int], stages: int, name: str) -> None:
    bad = [i for i in out_indices if not -stages <= i < stages]
    if bad:
        raise ValueError(f"out_indices {list(out_indices)} out of range: backbone {name!r} has "
                         f"{stages} stages (valid indices 0..{stages - 1})")
    normalised = [i % stages for i in out_indices]
    if sorted(set(normalised)) != normalised:
        raise ValueError(f"out_indices must be distinct and ascending, got {list(out_indices)}")
