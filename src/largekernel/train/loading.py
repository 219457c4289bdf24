"""Loading trained models for evaluation, prediction and deployment.

Accepts the three things a run produces: a run directory, a training checkpoint (``.pt``
written by the trainer) or a deploy checkpoint (``.safetensors`` + JSON written by
:func:`largekernel.checkpoint.save_checkpoint`). The data-set description (name, image size,
mean/std, class names) is read from the checkpoint's metadata, so no extra flags are needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from largekernel.train import checkpointing as ckpt

__all__ = ["LoadedModel", "resolve_checkpoint", "load_trained_model", "read_deploy_metadata"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for inference plus what is known about how it was trained."""

    model: nn.Module
    data_info: dict[str, Any] | None
    source: Path
    kind: str  # "train" (training checkpoint) or "deploy" (safetensors)
    model_config: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a run directory to its best artefact; check that a file exists.

    In a directory: ``model.safetensors`` (deploy), else ``train_checkpoint.pt``, else the
    latest ``checkpoints/step_*.pt``.

    Raises:
        FileNotFoundError: Nothing usable at ``path``.
    """
    from largekernel.train.trainer import DEPLOY_NAME, TRAIN_CKPT_NAME

    path = Path(path)
    if path.is_dir():
        for candidate in (path / DEPLOY_NAME, path / TRAIN_CKPT_NAME):
            if candidate.is_file():
                return candidate
        latest = ckpt.latest_checkpoint(path)
        if latest is not None:
            return latest
        raise FileNotFoundError(f"no checkpoint found in directory {path} (expected {DEPLOY_NAME}, "
                                f"{TRAIN_CKPT_NAME} or checkpoints/step_*.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_deploy_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON document saved next to (or inside) a deploy checkpoint."""
    from largekernel.checkpoint import config_path_for

    path = Path(path)
    cfg_path = config_path_for(path)
    if cfg_path.is_file():
        try:
            return json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"invalid JSON config {cfg_path}: {err}") from None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("largekernel_config")
    except Exception as err:
        raise ValueError(f"cannot read {path} as safetensors: {err}") from None
    return json.loads(text) if text else {}


def load_trained_model(path: str | Path, *, use_ema: bool | None = None,
                       device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference (eval mode) from a run dir, training or deploy checkpoint.

    Args:
        path: Run directory or checkpoint file.
        use_ema: For training checkpoints: take the EMA weights (default: the EMA weights when the
            run chose them for its deploy checkpoint, i.e. when they scored at least as well).
        device: Where to put the model.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Unreadable/corrupt checkpoint, unknown model name, weights that do not fit.
    """
    path = resolve_checkpoint(path)
    if _is_safetensors(path):
        from largekernel.checkpoint import create_model_from

        model = create_model_from(path)  # validates model.json first; CheckpointError is a ValueError
        doc = read_deploy_metadata(path)
        data_info = (doc.get("metadata") or {}).get("data")
        config = {"name": doc.get("name"), "kwargs": doc.get("kwargs", {})}
        kind = "deploy" if doc.get("form") == "deploy" else "train"
        return LoadedModel(model.to(device).eval(), data_info, path, kind, config)

    state = ckpt.load_training_checkpoint(path)

    config = state.get("model_config") or {}
    if not config.get("name"):
        raise ValueError(f"{path} does not record which model it holds (no model_config)")
    from largekernel.checkpoint import build_model_checked, load_checkpoint

    model = build_model_checked(config["name"], config.get("kwargs"), source=path,
                                shapes={k: tuple(v.shape) for k, v in state["model"].items()})
    weights = state["model"]
    ema = state.get("ema")
    if use_ema is None:
        use_ema = False
        metrics_file = path.parent / "metrics.json"
        if ema is not None and metrics_file.is_file():
            try:
                use_ema = json.loads(metrics_file.read_text()).get("weights") == "ema"
            except (OSError, json.JSONDecodeError):
                pass
    if use_ema:
        if ema is None:
            raise ValueError(f"{path} has no EMA weights (the run was trained without ema)")
        weights = ema["model"]
    load_checkpoint(model, weights, source=path)  # CheckpointError naming each key and both shapes
    return LoadedModel(model.to(device).eval(), state.get("data_info"), path, "train", config)
