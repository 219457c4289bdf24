"""One builder for every model family: configs, ``features_only``, stem levels and checkpoint filtering.

Every registered entry point calls :func:`build_model` with its model class, its name and the
model's own keyword arguments. The generic options are handled here, once, for all families
(the pattern of timm's ``build_model_with_cfg``):

* ``pretrained_cfg`` -- the model's data config (mean/std, input size, classifier name, ...),
  stored as ``model.pretrained_cfg`` and ``model.default_cfg`` (timm's attribute names);
* ``stem_features`` -- expose the stem's stride-2 map(s) as extra feature levels (see
  :meth:`largekernel.models.base.TimmModelMixin.set_stem_features`);
* ``features_only`` / ``out_indices`` -- drop the head, ``forward`` returns the selected levels;
* ``global_pool`` -- the head's pooling (``"avg"``, ``"max"``, or ``""`` for unpooled maps);
* ``pretrained`` -- weights from a *local* file named by ``pretrained_cfg["file"]`` (nothing is
  ever downloaded), passed through :func:`filter_state_dict` (container unwrapping, ``module.``
  prefixes, head keys dropped for backbones, a classifier of another size skipped).
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from largekernel.models.base import POOL_TYPES, check_global_pool

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_model",
    "filter_state_dict",
    "get_pretrained_cfg",
    "model_cfg",
    "register_cfg",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# every key is also a field of timm's PretrainedCfg, so a cfg can be handed to timm unchanged
_DEFAULT_CFG: dict[str, Any] = dict(
    url="",
    file=None,
    hf_hub_id=None,
    num_classes=1000,
    input_size=(3, 224, 224),
    pool_size=(7, 7),
    crop_pct=0.875,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    first_conv="stem.0",
    classifier="head.fc",
    license=None,
    paper_ids=None,
)

_CFGS: dict[str, dict[str, Any]] = {}


def model_cfg(**overrides: Any) -> dict[str, Any]:
    """A data/pretrained config: the ImageNet defaults with ``overrides`` applied.

    Example:
        >>> model_cfg(classifier="head.l")["mean"]
        (0.485, 0.456, 0.406)
    """
    unknown = sorted(set(overrides) - set(_DEFAULT_CFG))
    if unknown:
        raise TypeError(f"model_cfg got unknown key(s) {unknown}; known: {sorted(_DEFAULT_CFG)}")
    return {**_DEFAULT_CFG, **overrides}


def register_cfg(name: str, cfg: Mapping[str, Any]) -> None:
    """Record the default config of model ``name`` (called by the families next to their entry points)."""
    _CFGS[name] = dict(cfg)


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """A copy of ``name``'s registered config (the ImageNet defaults if it registered none)."""
    return dict(_CFGS.get(name, _DEFAULT_CFG))


def _resolve_cfg(name: str, pretrained_cfg: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    cfg = get_pretrained_cfg(name)
    if pretrained_cfg is None:
        return cfg
    if isinstance(pretrained_cfg, (str, os.PathLike)):
        return {**cfg, "file": str(pretrained_cfg)}
    if hasattr(pretrained_cfg, "to_dict"):  # a timm PretrainedCfg
        pretrained_cfg = pretrained_cfg.to_dict()
    if not isinstance(pretrained_cfg, Mapping):
        raise TypeError(
            f"pretrained_cfg must be a dict, a file path or None, got {type(pretrained_cfg).__name__}"
        )
    return {**cfg, **{k: v for k, v in pretrained_cfg.items() if v is not None or k not in cfg}}


def filter_state_dict(state: Any, model: nn.Module, classifier: str | None = None) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap, strip ``module.``, drop the head parts it does not have.

    Keys under the head are dropped when ``model`` has no head (``features_only``) and the
    classifier's weight and bias (named by ``classifier``, e.g. ``"head.fc"``) are dropped when their
    shapes differ (another number of classes), so the loaded model keeps its fresh classifier.
    Everything else must match exactly (the caller loads strictly).

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("convnext_atto", num_classes=10)
        >>> sd = filter_state_dict({"model": m.state_dict()}, m)
        >>> sorted(sd) == sorted(m.state_dict())
        True
    """
    from largekernel.checkpoint import _unwrap  # the one place that knows checkpoint containers

    sd = _unwrap(state)
    own = model.state_dict()
    if getattr(model, "features_only", False) or getattr(model, "head", True) is None:
        head_prefixes = ("head.", "head_dist.", "norm.", "head_norm.")
        sd = {k: v for k, v in sd.items() if k in own or not k.startswith(head_prefixes)}
    if classifier:
        for suffix in (".weight", ".bias"):
            key = classifier + suffix
            if key in sd and (key not in own or own[key].shape != sd[key].shape):
                logger.info("skipping %s from the checkpoint: shape %s, model %s", key, tuple(sd[key].shape),
                            tuple(own[key].shape) if key in own else "absent")
                del sd[key]
    return sd


def _read_checkpoint(path: str) -> Any:
    from largekernel.checkpoint import _read_file  # safe reading (weights_only, safetensors checks)

    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained_cfg['file'] {path!r} does not exist")
    return _read_file(p)


def load_pretrained(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """Load ``cfg["file"]`` into ``model`` through :func:`filter_state_dict` (strict otherwise)."""
    path = cfg.get("file")
    if not path:
        raise ValueError(
            "pretrained=True needs a local checkpoint: pass pretrained_cfg={'file': PATH} "
            "(largekernel never downloads weights)"
        )
    sd = filter_state_dict(_read_checkpoint(path), model, cfg.get("classifier"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    classifier = cfg.get("classifier") or ""
    missing = [k for k in missing if not (classifier and k.startswith(classifier + "."))]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path!r} does not match the model: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )


def build_model(
    model_cls: Callable[..., nn.Module],
    name: str,
    *,
    pretrained: bool = False,
    pretrained_cfg: Mapping[str, Any] | str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    stem_features: bool | int = False,
    global_pool: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``model_cls(**kwargs)`` and apply the generic options (see the module docstring).

    Args:
        model_cls: The family's model class (or any callable returning a
            :class:`~largekernel.models.base.TimmModelMixin` model).
        name: Registered model name (selects the default config).
        pretrained: Load ``pretrained_cfg["file"]`` (a local checkpoint).
        pretrained_cfg: Overrides of the default config (a dict), or a checkpoint path.
        features_only: Drop the head; ``forward`` returns the maps of ``out_indices``.
        out_indices: Level indices for ``features_only`` (default: all levels).
        stem_features: ``True`` (or a count) exposes the stem's stride-2 map(s) as the first
            level(s); the stage levels move up accordingly.
        global_pool: Head pooling, ``"avg"``, ``"max"`` or ``""`` (keep the model's default if ``None``).
        **kwargs: The model's own arguments.

    Returns:
        The model, with ``pretrained_cfg`` / ``default_cfg`` set.

    Example:
        >>> from largekernel.models.convnext import ConvNeXt
        >>> m = build_model(ConvNeXt, "convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
        ...                 features_only=True, stem_features=True)
        >>> m.feature_info.reduction()
        [2, 4, 8, 16, 32]
    """
    if not isinstance(features_only, bool):
        raise TypeError(f"features_only must be a bool, got {features_only!r}")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only used with features_only=True")
    cfg = _resolve_cfg(name, pretrained_cfg)
    model = model_cls(**kwargs)
    if stem_features:
        model.set_stem_features(1 if stem_features is True else stem_features)
    if global_pool is not None:
        # only the pooling changes: the classifier keeps its initialisation
        model.global_pool = check_global_pool(global_pool, getattr(model, "pool_types", POOL_TYPES))
    if features_only:
        model.as_features(None if out_indices is None else tuple(out_indices))
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    if pretrained:
        if not cfg.get("file") and name.startswith(("convnext_", "inception_next_")):
            from largekernel.integrations.timm_cache import find_timm_checkpoint  # offline: timm's caches

            cfg["file"] = str(find_timm_checkpoint(name))
        load_pretrained(model, cfg)
    return model
