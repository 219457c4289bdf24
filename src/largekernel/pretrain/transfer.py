"""Fine-tuning from a pre-trained encoder: load every backbone weight, keep the fresh head."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["load_pretrained_encoder", "resolve_encoder_path"]

log = logging.getLogger(__name__)

# options that may differ between the pre-trained backbone and the fine-tuned classifier
_FREE_KWARGS = {"num_classes", "features_only", "out_indices", "drop_path_rate", "drop_rate", "head_init_scale",
                "global_pool", "pretrained"}


def resolve_encoder_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/encoder.safetensors`` for a pre-training run directory.

    Raises:
        FileNotFoundError: Nothing usable at ``path``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "encoder.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"init_from: no pre-trained checkpoint at {path} (expected a .safetensors "
                                f"file or a `largekernel pretrain` run directory containing encoder.safetensors)")
    return p


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from largekernel.checkpoint import _read_file, _unwrap, read_checkpoint_document

    state = dict(_unwrap(_read_file(path)))
    try:
        config = read_checkpoint_document(path, validate=False)
    except Exception:  # a plain state dict without our JSON config: shapes are still checked
        config = None
    return state, config


def _head_keys(model: nn.Module) -> set[str]:
    """Keys of ``model`` that its ``features_only`` twin lacks (the classifier head and final norm)."""
    from largekernel.models.registry import create_model

    config = getattr(model, "largekernel_config", None)
    if not config:
        raise ValueError("init_from needs a model built by largekernel.create_model (it has no largekernel_config)")
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("num_classes", "out_indices")}
    kwargs["features_only"] = True
    with torch.device("meta"):
        twin = create_model(config["name"], **kwargs)
    return set(model.state_dict()) - set(twin.state_dict())


def load_pretrained_encoder(model: nn.Module, path: str | Path) -> nn.Module:
    """Initialise ``model`` (a classifier) from a pre-trained encoder checkpoint, in place.

    Every weight of ``model`` except its head (the keys a ``features_only`` build of the same model
    lacks) must be in the checkpoint with the same shape; the checkpoint may hold nothing else
    but head keys, which are ignored: the head keeps its fresh initialisation.

    Args:
        model: A classifier built by ``largekernel.create_model``.
        path: An ``encoder.safetensors`` written by ``largekernel pretrain`` (or its run directory),
            or any checkpoint of the same architecture (its head is discarded).

    Returns:
        ``model``.

    Raises:
        FileNotFoundError: No checkpoint at ``path``.
        ValueError: A different model or architecture, missing, unexpected or mis-shaped weights.

    Example:
        >>> import largekernel  # doctest: +SKIP
        >>> model = largekernel.create_model("unireplknet_a", num_classes=10)  # doctest: +SKIP
        >>> load_pretrained_encoder(model, "runs/mim/encoder.safetensors")  # doctest: +SKIP
    """
    file = resolve_encoder_path(path)
    state, saved = _read_state(file)
    mine = getattr(model, "largekernel_config", None) or {}
    if saved and saved.get("name"):
        if saved["name"] != mine.get("name"):
            raise ValueError(f"init_from: {file} holds a {saved['name']!r} encoder, but the model is "
                             f"{mine.get('name')!r}")
        a = {k: v for k, v in (saved.get("kwargs") or {}).items() if k not in _FREE_KWARGS}
        b = {k: v for k, v in (mine.get("kwargs") or {}).items() if k not in _FREE_KWARGS}
        differ = sorted(k for k in set(a) | set(b) if json.dumps(a.get(k)) != json.dumps(b.get(k)))
        if differ:
            show = lambda d, k: repr(d[k]) if k in d else "(default)"  # noqa: E731
            detail = ", ".join(f"{k}: pre-trained {show(a, k)} vs model {show(b, k)}" for k in differ)
            raise ValueError(f"init_from: {file} was pre-trained with different model options ({detail}); "
                             f"fine-tune with the same model_kwargs")
    head = _head_keys(model)
    target = model.state_dict()
    missing = sorted(k for k in target if k not in head and k not in state)
    unexpected = sorted(k for k in state if k not in target)
    mismatched = sorted(k for k in state if k in target and k not in head and tuple(state[k].shape) != tuple(target[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''} ({len(keys)})")
        raise ValueError(f"init_from: {file} does not fit the model's backbone ({'; '.join(parts)})")
    body: Mapping[str, torch.Tensor] = {k: v for k, v in state.items() if k not in head}
    result = model.load_state_dict(body, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= head
    log.info("initialised %d backbone tensors from %s; head (%s) freshly initialised", len(body), file,
             ", ".join(sorted(head)) or "none")
    return model
