"""Safe checkpoint loading and saving.

* :func:`save_checkpoint` writes weights as ``.safetensors`` (atomically) plus a JSON config
  next to it, so :func:`create_model_from` can rebuild the model offline.
* :func:`load_checkpoint` reads our format, torch files (only with ``weights_only=True``: a
  pickle that would construct arbitrary objects is refused, never executed) and in-memory
  state dicts, unwraps ``{"model"|"state_dict"|"model_ema": ...}`` and strips ``module.`` /
  ``_orig_mod.`` prefixes. Official UniRepLKNet/RepLKNet checkpoints load as-is because the
  models use the official key layout.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from largekernel.utils.atomic import atomic_write

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "create_model_from", "config_path_for"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
_PREFIXES = ("module.", "_orig_mod.")
_FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model (message lists the problems)."""


def config_path_for(path: str | os.PathLike) -> pathlib.Path:
    """The JSON config written next to a checkpoint: ``model.safetensors`` -> ``model.json``."""
    return pathlib.Path(path).with_suffix(".json")


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def _is_safetensors(path: pathlib.Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # header: 8-byte little-endian length, then a JSON object
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_file(path: pathlib.Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors is a dependency
            raise CheckpointError("reading .safetensors files needs the 'safetensors' package") from exc
        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (weights_only=True rejected it; "
            f"it may contain arbitrary Python objects or code). Details: {exc}"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"could not read checkpoint {path}: {type(exc).__name__}: {exc}") from exc


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state dict inside common wrappers and strip DataParallel/compile prefixes."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _looks_like_state_dict(obj):
            for key in _WRAPPER_KEYS:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint does not contain a state dict (got {type(obj).__name__})")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. epoch counters stored next to the weights
        k = str(key)
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    changed = True
        state[k] = value
    if not state:
        raise CheckpointError(
            f"checkpoint contains no tensors (top-level keys: {sorted(map(str, obj))[:10]})"
        )
    return state


def _looks_like_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _diff(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    return missing, unexpected, mismatched


def _format_problems(missing: list[str], unexpected: list[str], mismatched: list[str], limit: int = 20) -> str:
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
            parts.append(f"{len(items)} {title}: {shown}")
    return "; ".join(parts)


def _is_deploy_model(model: nn.Module) -> bool:
    return getattr(model, "largekernel_form", None) == "deploy" or bool(
        getattr(model, "largekernel_config", {}).get("kwargs", {}).get("deploy", False)
    )


def _training_form_twin(model: nn.Module) -> nn.Module | None:
    """A training-form model of the same configuration, if the model knows how it was built."""
    config = getattr(model, "largekernel_config", None)
    if not config:
        return None
    from largekernel.models.registry import create_model

    kwargs = dict(config.get("kwargs", {}))
    kwargs.pop("deploy", None)
    ref = next(iter(model.parameters()), None)
    twin = create_model(config["name"], **kwargs)
    if ref is not None:
        twin = twin.to(device=ref.device, dtype=ref.dtype)
    return twin


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``model`` safely.

    Accepts a path (our ``.safetensors`` format or a torch file read with
    ``weights_only=True``) or an in-memory (possibly wrapped) state dict. If a
    training-form checkpoint is given to a deploy-form model built by ``create_model``, it is
    loaded into a training-form twin, reparameterised and copied over.

    Args:
        model: The target model.
        path_or_state_dict: File path or mapping.
        strict: Require exactly matching keys (shapes must always match).

    Returns:
        ``model`` (for chaining).

    Raises:
        CheckpointError: Unreadable/unsafe file, or keys/shapes that do not fit (listed).

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10)
        >>> largekernel.load_checkpoint(m, m.state_dict()) is m
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        raw = _read_file(pathlib.Path(path_or_state_dict))
    elif isinstance(path_or_state_dict, Mapping):
        raw = path_or_state_dict
    else:
        raise TypeError(
            f"path_or_state_dict must be a path or a mapping, got {type(path_or_state_dict).__name__}"
        )
    state = _unwrap(raw)
    missing, unexpected, mismatched = _diff(model, state)
    if (missing or unexpected) and not mismatched and strict and _is_deploy_model(model):
        converted = _convert_training_to_deploy(model, state)
        if converted is not None:
            state = converted
            missing, unexpected, mismatched = _diff(model, state)
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"checkpoint does not fit {type(model).__name__}: {_format_problems(missing, unexpected, mismatched)}"
        )
    if missing or unexpected:
        logger.warning("non-strict load: %s", _format_problems(missing, unexpected, []))
    model.load_state_dict(state, strict=False)
    return model


def _convert_training_to_deploy(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict | None:
    twin = _training_form_twin(model)
    if twin is None:
        return None
    m, u, s = _diff(twin, state)
    if m or u or s:
        return None
    from largekernel.reparam import reparameterize

    twin.load_state_dict(state)
    logger.info("converting a training-form checkpoint to the deploy form")
    return reparameterize(twin, inplace=True).state_dict()


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
def _model_form(model: nn.Module) -> str:
    return "deploy" if _is_deploy_model(model) else "train"


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> pathlib.Path:
    """Write ``model``'s weights to ``path`` (.safetensors) and its config to ``path`` with ``.json``.

    Both files are written atomically (temporary file, fsync, ``os.replace``). The JSON holds
    ``{"format", "name", "kwargs", "form", "metadata"}`` where ``name``/``kwargs`` come from
    ``model.largekernel_config`` (set by ``create_model``) and ``form`` is ``"train"`` or
    ``"deploy"`` (after :func:`largekernel.reparameterize`).

    Args:
        model: The model to save.
        path: Destination; must end in ``.safetensors``.
        metadata: Extra JSON-serialisable information (e.g. epoch, accuracy).

    Returns:
        The path of the weights file.

    Raises:
        ValueError: Wrong suffix or non-JSON-serialisable metadata/config.

    Example:
        >>> import largekernel, tempfile, os
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10)
        >>> p = largekernel.save_checkpoint(m, os.path.join(tempfile.mkdtemp(), "a.safetensors"))
        >>> largekernel.create_model_from(p).num_classes
        10
    """
    from safetensors.torch import save

    path = pathlib.Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in '.safetensors', got {str(path)!r}")
    config = getattr(model, "largekernel_config", None)
    doc = {
        "format": f"largekernel-checkpoint-v{_FORMAT_VERSION}",
        "name": config.get("name") if config else None,
        "kwargs": dict(config.get("kwargs", {})) if config else {},
        "form": _model_form(model),
        "metadata": dict(metadata) if metadata else {},
    }
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model config / metadata must be JSON-serialisable: {exc}") from exc
    # safetensors refuses aliased storage: save independent contiguous copies
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    blob = save(tensors, metadata={"largekernel_config": text})
    atomic_write(path, lambda f: f.write(blob))
    atomic_write(config_path_for(path), lambda f: f.write(text.encode("utf-8")))
    logger.info("saved %d tensors to %s", len(tensors), path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _read_config(path: pathlib.Path) -> dict:
    cfg_path = config_path_for(path)
    if cfg_path.is_file():
        try:
            return json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"invalid config file {cfg_path}: {exc}") from exc
    # fall back to the copy embedded in the safetensors header
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("largekernel_config")
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not text:
        raise CheckpointError(f"no config found for {path} (expected {cfg_path} or embedded metadata)")
    return json.loads(text)


def create_model_from(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_checkpoint` (offline) and load its weights.

    A checkpoint saved after reparameterisation is rebuilt in deploy form (with
    ``deploy=True`` when the model accepts it, else by reparameterising a fresh model).

    Raises:
        CheckpointError: Missing/invalid config or weights that do not fit.

    Example:
        >>> # model = largekernel.create_model_from("runs/best.safetensors")
    """
    from largekernel.models.registry import create_model, model_entrypoint

    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    config = _read_config(path)
    name = config.get("name")
    if not name:
        raise CheckpointError(f"the config of {path} does not name a registered model (saved without create_model?)")
    kwargs = dict(config.get("kwargs", {}))
    deploy = config.get("form") == "deploy"
    if deploy and "deploy" in inspect.signature(model_entrypoint(name)).parameters:
        kwargs["deploy"] = True
        model = create_model(name, **kwargs)
    else:
        model = create_model(name, **kwargs)
        if deploy:
            from largekernel.reparam import reparameterize

            model = reparameterize(model, inplace=True)
    load_checkpoint(model, path)
    if deploy:
        model.largekernel_form = "deploy"
        model.eval()
    return model

