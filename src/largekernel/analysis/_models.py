"""Shared helpers of the analysis tools: resolving a model argument and reading its stages.

Every analysis accepts a model given as an ``nn.Module``, a registered model name or a checkpoint
path (run directory, training ``.pt`` or deploy ``.safetensors``). The stage helpers rely on the
timm contract the zoo follows (``feature_info`` with per-stage ``reduction`` and
``forward_intermediates``), so they work on every image model of the registry.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["ResolvedModel", "resolve_model", "num_stages", "stage_index", "stage_reduction",
           "stage_output", "parse_model_kwargs"]


@dataclass
class ResolvedModel:
    """A model plus what is known about it (its label, and the data it was trained on)."""

    model: nn.Module
    label: str
    source: str  # "module", "registry" or the checkpoint path
    data_info: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)


def parse_model_kwargs(text: str | Mapping | None, arg: str = "--model-kwargs") -> dict[str, Any]:
    """``None``, a mapping or a JSON object string -> a dict (errors name ``arg``)."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{arg} must be a JSON object, got {text!r} ({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{arg} must be a JSON object, got {text!r}")
    return value


def resolve_model(target: nn.Module | str | Path, model_kwargs: Mapping[str, Any] | None = None, *,
                  arg: str = "model") -> ResolvedModel:
    """An ``nn.Module``, registered model name or checkpoint path -> :class:`ResolvedModel`.

    Args:
        target: The model itself, a name from :func:`largekernel.list_models`, or a run
            directory / training checkpoint / deploy checkpoint.
        model_kwargs: Constructor options when ``target`` is a model name.
        arg: The argument's name, used in error messages (e.g. ``"MODEL"`` in the CLI).

    Raises:
        ValueError: ``target`` is neither an existing file nor a registered name, or the file is
            not a model checkpoint.

    Example:
        >>> resolve_model("unireplknet_a", {"num_classes": 10}).label
        'unireplknet_a'
    """
    if isinstance(target, nn.Module):
        if model_kwargs:
            raise ValueError(f"model_kwargs only apply when {arg} is a model name")
        return ResolvedModel(target, type(target).__name__, "module")
    if not isinstance(target, (str, Path)):
        raise TypeError(f"{arg} must be an nn.Module, a model name or a checkpoint path, "
                        f"got {type(target).__name__}")
    from largekernel.models.registry import create_model, is_model

    path = Path(target)
    if path.exists():
        if model_kwargs:
            raise ValueError(f"model_kwargs only apply when {arg} is a model name, not a checkpoint")
        from largekernel.train.loading import load_trained_model

        try:
            loaded = load_trained_model(path)
        except (ValueError, KeyError, TypeError, OSError) as err:
            # the loader's reason, first line only (torch's unpickling errors run to a page)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            raise ValueError(f"{arg} {str(target)!r} is not a model checkpoint (expected a run directory, a "
                             f"training .pt or a deploy .safetensors): {reason}") from None
        name = (loaded.model_config or {}).get("name") or type(loaded.model).__name__
        label = path.name if path.is_dir() else path.stem
        return ResolvedModel(loaded.model, f"{name} ({label})", str(loaded.source), loaded.data_info,
                             dict(loaded.model_config or {}))
    if isinstance(target, str) and is_model(target):
        kwargs = dict(model_kwargs or {})
        model = create_model(target, **kwargs)
        return ResolvedModel(model, target, "registry", None, {"name": target, "kwargs": kwargs})
    from largekernel.models.registry import list_models
    import difflib

    close = difflib.get_close_matches(str(target), list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"{arg} {str(target)!r} is neither an existing checkpoint nor a registered model{hint}")


def _feature_entries(model: nn.Module) -> list[dict]:
    info = getattr(model, "_feature_info", None) or getattr(model, "feature_info", None)
    entries = getattr(info, "entries", None)
    if not entries or not hasattr(model, "forward_intermediates"):
        raise ValueError(f"model {type(model).__name__} has no stages (needs feature_info and "
                         "forward_intermediates, like the registered image models)")
    return list(entries)


def num_stages(model: nn.Module) -> int:
    """Number of stages (feature maps) ``model`` exposes."""
    return len(_feature_entries(model))


def stage_index(model: nn.Module, stage: int, arg: str = "stage") -> int:
    """Normalise ``stage`` (negatives count from the end); a clear error when out of range."""
    n = num_stages(model)
    if isinstance(stage, bool) or not isinstance(stage, int) or not -n <= stage < n:
        raise ValueError(f"{arg} must be an int in [{-n}, {n - 1}] ({type(model).__name__} has {n} "
                         f"stages), got {stage!r}")
    return stage % n


def stage_reduction(model: nn.Module, stage: int) -> int:
    """Down-sampling factor (stride) of stage ``stage``'s feature map."""
    return int(_feature_entries(model)[stage_index(model, stage)]["reduction"])


def stage_output(model: nn.Module, x: torch.Tensor, stage: int) -> torch.Tensor:
    """The feature map (NCHW) of stage ``stage`` for input ``x``."""
    index = stage_index(model, stage)
    # the model's own ``out_indices`` may exclude the stage; indices are stage ids, not positions.
    # timm's newer signature returns ``(final, intermediates)`` unless ``intermediates_only``.
    params = inspect.signature(model.forward_intermediates).parameters
    kwargs = {name: True for name in ("intermediates_only", "stop_early") if name in params}
    out = model.forward_intermediates(x, [index], **kwargs)
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (list, tuple)):
        out = out[1]
    return out[0]


def kernel_size_kwargs(name: str, kernel_size: int, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor options giving every spatial mixer of model ``name`` a ``kernel_size`` kernel.

    Supported families: ``unireplknet_*`` (every block a plain ``K x K`` depthwise conv + BN via
    ``mixer="dwconv"``, as the Dilated Reparam Block has no branch table beyond 17), ``convnext_*``
    and ``replknet_*`` (the large kernel of every stage). Depth and widths are left unchanged.

    Example:
        >>> kernel_size_kwargs("convnext_atto", 13)
        {'kernel_sizes': 13}
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel size must be an odd positive int, got {kernel_size!r}")
    kwargs = dict(base or {})
    if name.startswith("unireplknet_"):
        from largekernel.models.unireplknet import UNIREPLKNET_CONFIGS

        depths = kwargs.get("depths") or UNIREPLKNET_CONFIGS[name.split("_", 1)[1]][0]
        kwargs["kernel_sizes"] = [[kernel_size] * int(d) for d in depths]
        kwargs["mixer"] = "dwconv" if kernel_size >= 7 else None
    elif name.startswith("convnext_"):
        kwargs["kernel_sizes"] = kernel_size
    elif name.startswith("replknet_"):
        kwargs["large_kernel_sizes"] = [kernel_size] * 4
    else:
        raise ValueError(f"--kernel-sizes supports unireplknet_*, convnext_* and replknet_* models, not {name!r}")
    return kwargs
