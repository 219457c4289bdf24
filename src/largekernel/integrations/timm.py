"""Register largekernel's models in timm's registry (opt-in): :func:`register_with_timm`.

After ``largekernel.register_with_timm()``, ``timm.create_model(name, ...)`` builds largekernel
models, including ``features_only=True`` / ``out_indices`` / ``in_chans``, on any device (also
``meta``, which smp uses to probe an encoder), with ``feature_info`` and ``pretrained_cfg``.

Naming: every model is registered as ``lk_<name>`` (e.g. ``lk_convnext_atto``); models whose name
timm does not already use are *also* registered under their plain name (``unireplknet_a``,
``replknet_31b``, ``lsnet_t``, ...). Names timm already has (``convnext_*``, ``inception_next_*``)
keep meaning timm's own models.

Feature levels as timm sees them: the stem's stride-2 map comes first (for LSNet also its stride-4
map), then the stages, so image backbones have levels at strides 2, 4, 8, 16, 32 -- the layout smp's
UNet++ and MONAI's FlexibleUNet need. ConvNeXt and InceptionNeXt have a 4x4 patchify stem with no
stride-2 map: their level 0 is the input, 2x2 average-pooled (no parameters). The default
``out_indices`` are the levels up to stride 32 (LSNet's stride-64 last stage is index 5).
``output_stride=8/16`` (DeepLab) sets the later stages' stride-2 convs to stride 1
(:meth:`~largekernel.models.base.TimmModelMixin.set_output_stride`; no dilation).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

__all__ = ["register_with_timm", "TIMM_PREFIX"]

logger = logging.getLogger(__name__)

#: Prefix of the names every largekernel model gets in timm's registry.
TIMM_PREFIX = "lk_"

# timm looks up a registering function's module for a ``default_cfgs`` dict: the pretrained cfgs
default_cfgs: dict[str, dict[str, Any]] = {}

# largekernel name -> (number of stem levels, default out_indices) in the timm view
_VIEWS: dict[str, tuple[int, tuple[int, ...]]] = {}


def _timm_view(name: str) -> tuple[int, tuple[int, ...]]:
    """(stem levels, default out_indices) of ``name`` as exposed through timm."""
    if name not in _VIEWS:
        import torch

        from largekernel.models.registry import create_model

        with torch.device("meta"):
            model = create_model(name)
        specs = model._stem_level_specs()
        stage_reductions = model.feature_info.reduction()
        # stem levels below the first stage's stride: 2 (and 4 for LSNet's stride-8 stem)
        stem = sum(1 for s in specs if s.reduction < stage_reductions[0])
        reductions = [s.reduction for s in specs[:stem]] + stage_reductions
        default = tuple(i for i, r in enumerate(reductions) if r <= 32)
        _VIEWS[name] = (stem, default)
    return _VIEWS[name]


def _make_entry(timm_name: str, lk_name: str):
    def entry(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: dict | None = None,
              cache_dir: Any = None, **kwargs: Any) -> nn.Module:
        from largekernel.models.registry import create_model

        output_stride = kwargs.pop("output_stride", None)
        stem, default_indices = _timm_view(lk_name)
        if kwargs.get("features_only") and kwargs.get("out_indices") is None:
            kwargs["out_indices"] = default_indices
        cfg: dict[str, Any] = {}
        if hasattr(pretrained_cfg, "to_dict"):  # timm's PretrainedCfg
            cfg = {k: v for k, v in pretrained_cfg.to_dict().items() if k in default_cfgs[timm_name]}
        elif isinstance(pretrained_cfg, dict):
            cfg = dict(pretrained_cfg)
        elif isinstance(pretrained_cfg, (str, os.PathLike)) and os.path.isfile(pretrained_cfg):
            cfg = {"file": os.fspath(pretrained_cfg)}
        cfg.update(pretrained_cfg_overlay or {})
        if stem:
            kwargs["stem_features"] = stem
        model = create_model(lk_name, pretrained=pretrained, pretrained_cfg=cfg or None, **kwargs)
        if output_stride is not None and output_stride != 32:
            model.set_output_stride(output_stride)  # DeepLab-style decoders ask for 8 or 16
        return model

    entry.__name__ = entry.__qualname__ = timm_name
    entry.__module__ = __name__
    entry.__doc__ = f"largekernel's ``{lk_name}`` through timm (see :mod:`largekernel.integrations.timm`)."
    return entry


def register_with_timm(prefix: str = TIMM_PREFIX, plain_names: bool = True) -> dict[str, str]:
    """Make every largekernel model buildable by ``timm.create_model`` (idempotent).

    Args:
        prefix: Prefix of the names registered for every model (default ``"lk_"``); must be non-empty
            so that it can never shadow one of timm's models.
        plain_names: Also register each model under its own name when timm has no model of that name.

    Returns:
        ``{timm name: largekernel name}`` for every name registered by this call or before.

    Raises:
        ImportError: timm is not installed.
        ValueError: an empty ``prefix``.

    Example:
        >>> import largekernel, timm
        >>> names = largekernel.register_with_timm()
        >>> m = timm.create_model("unireplknet_a", features_only=True, out_indices=(0, 1, 2, 3, 4))
        >>> m.feature_info.reduction()
        [2, 4, 8, 16, 32]
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string (it keeps timm's own names intact), got {prefix!r}")
    try:
        import timm.models
        from timm.models import register_model
    except ImportError as exc:  # pragma: no cover - timm is an optional dependency
        raise ImportError("register_with_timm needs timm: pip install timm") from exc
    from largekernel.models.builder import get_pretrained_cfg
    from largekernel.models.registry import list_models

    registered: dict[str, str] = {}
    for lk_name in list_models():
        candidates = [prefix + lk_name] + ([lk_name] if plain_names else [])
        for timm_name in candidates:
            if timm.models.is_model(timm_name):
                if getattr(timm.models.model_entrypoint(timm_name), "__module__", None) == __name__:
                    registered[timm_name] = lk_name  # ours from an earlier call
                continue  # timm's own model of that name stays
            cfg = get_pretrained_cfg(lk_name)
            default_cfgs[timm_name] = {k: v for k, v in cfg.items() if v is not None or k in ("file",)}
            register_model(_make_entry(timm_name, lk_name))
            registered[timm_name] = lk_name
    logger.info("registered %d largekernel model names with timm", len(registered))
    return registered
