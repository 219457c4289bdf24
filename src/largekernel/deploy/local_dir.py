"""The hub-style local model directory: ``config.json`` + ``model.safetensors``, offline.

The layout is the one timm writes for a model hub repository (``architecture``, ``num_classes``,
``num_features``, ``model_args``, ``pretrained_cfg``), plus a ``largekernel`` entry recording the
form (training or reparameterised deploy form). Nothing is ever downloaded: loading reads the
directory only. ``largekernel.create_model("local-dir:PATH")`` calls :func:`load_local_dir`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from largekernel.utils.atomic import atomic_write

__all__ = ["save_local_dir", "load_local_dir", "CONFIG_NAME", "WEIGHTS_NAME"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_FORMAT = "largekernel-local-dir-v1"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_local_dir(
    model: nn.Module, directory: str | os.PathLike, *, pretrained_cfg: Mapping[str, Any] | None = None
) -> Path:
    """Save ``model`` as ``directory/config.json`` + ``directory/model.safetensors``.

    Each file is written atomically; the weights first, so a directory whose ``config.json``
    is present is always complete.

    Args:
        model: A model built by :func:`largekernel.create_model` (its name and options are saved),
            in training or deploy form.
        directory: Created if missing.
        pretrained_cfg: Extra timm-style information (``input_size``, ``mean``, ``std``,
            ``label_names``, ...).

    Returns:
        The directory.

    Raises:
        ValueError: The model does not record its registered name (not built by create_model),
            or its options are not JSON-serialisable.

    Example:
        >>> import largekernel, tempfile
        >>> m = largekernel.create_model("convnext_atto", num_classes=4)
        >>> d = save_local_dir(m, tempfile.mkdtemp())
        >>> largekernel.create_model(f"local-dir:{d}").num_classes
        4
    """
    from safetensors.torch import save

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    config = getattr(model, "largekernel_config", None)
    if not config or not config.get("name"):
        raise ValueError("model must be built by largekernel.create_model (it records no registered name)")
    from largekernel.checkpoint import _model_form

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory {str(directory)!r} exists and is not a directory")
    kwargs = dict(config.get("kwargs", {}))
    doc = {
        "architecture": config["name"],
        "num_classes": getattr(model, "num_classes", kwargs.get("num_classes")),
        "num_features": getattr(model, "num_features", None),
        "model_args": kwargs,
        "pretrained_cfg": dict(pretrained_cfg or {}),
        "largekernel": {"format": _FORMAT, "form": _model_form(model)},
    }
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model options / pretrained_cfg must be JSON-serialisable: {exc}") from exc
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    blob = save(tensors, metadata={"format": "pt"})
    atomic_write(directory / WEIGHTS_NAME, lambda f: f.write(blob))
    atomic_write(directory / CONFIG_NAME, lambda f: f.write(text.encode("utf-8")))
    logger.info("saved %s to %s", config["name"], directory)
    return directory


def _read_config(directory: Path) -> dict:
    cfg = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory not found: {directory}")
    if not cfg.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME} (not a saved model directory)")
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid {cfg}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("architecture"), str):
        raise ValueError(f"{cfg} names no 'architecture' (a registered largekernel model name)")
    return doc


def load_local_dir(directory: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights (offline, safetensors only).

    Args:
        directory: A directory written by :func:`save_local_dir` (or by timm for a largekernel
            architecture: ``config.json`` with ``architecture`` and ``model_args``).
        **overrides: Model options replacing saved ones (the weights must still fit, e.g.
            ``features_only=True`` or ``drop_path_rate=0.1``).

    Returns:
        The model; in eval mode if it was saved in deploy form, otherwise in training mode.

    Raises:
        FileNotFoundError: Missing directory, config or weights.
        ValueError: Invalid config, unknown architecture, weights that do not fit.

    Example:
        >>> # model = load_local_dir("exported/unireplknet_a")
    """
    from largekernel.checkpoint import CheckpointError, load_checkpoint
    from largekernel.models.registry import create_model, model_entrypoint

    directory = Path(directory).expanduser()
    doc = _read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_NAME}")
    name = doc["architecture"]
    kwargs = dict(doc.get("model_args") or {})
    if "num_classes" not in kwargs and isinstance(doc.get("num_classes"), int):
        kwargs["num_classes"] = doc["num_classes"]
    kwargs.update(overrides)
    deploy = (doc.get("largekernel") or {}).get("form") == "deploy"
    import inspect

    if deploy and "deploy" in inspect.signature(model_entrypoint(name)).parameters:
        model = create_model(name, **{**kwargs, "deploy": True})
    else:
        model = create_model(name, **kwargs)
        if deploy:
            from largekernel.reparam import reparameterize

            model = reparameterize(model, inplace=True)
    model.largekernel_config = {"name": name, "kwargs": kwargs}
    try:
        # a features-only backbone has no head: the saved head weights are simply not used
        load_checkpoint(model, weights, strict=not kwargs.get("features_only", False))
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    if deploy:
        model.largekernel_form = "deploy"
        model.eval()
    model.pretrained_cfg = dict(doc.get("pretrained_cfg") or {})
    return model
