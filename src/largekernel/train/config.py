"""Training configuration: a dataclass, YAML files and ``key=value`` command-line overrides.

Precedence (lowest to highest): the dataclass defaults, the packaged ``configs/default.yaml``
(when no ``--config`` is given), a user YAML file, explicit command-line flags, and finally
positional ``key=value`` overrides. Dotted keys reach into dict-valued fields
(``model_kwargs.dims=[16,32,64,128]``). Values are parsed as YAML scalars/lists, so
``epochs=3``, ``amp=bf16``, ``ema=true`` and ``model_kwargs.kernel_sizes=[[3],[13,13]]`` work.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = [
    "TrainConfig",
    "load_config",
    "default_config_path",
    "apply_overrides",
    "parse_override",
    "config_from_dict",
]

log = logging.getLogger(__name__)

_OPTIMIZERS = ("adamw", "sgd")
_AMP = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Example:
        >>> from largekernel.train.config import TrainConfig, apply_overrides
        >>> cfg = apply_overrides(TrainConfig(), ["epochs=2", "model_kwargs.dims=[8,16,32,64]"])
        >>> cfg.epochs, cfg.model_kwargs["dims"]
        (2, [8, 16, 32, 64])
    """

    # model
    model: str = "unireplknet_a"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    drop_path_rate: float = 0.0
    accelerate: bool = True
    grad_checkpointing: bool = False
    # data
    data: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    augment: bool = True
    train_subset: int | None = None  # use only the first N training samples (smoke tests)
    eval_subset: int | None = None
    eval_split: str = "test"
    num_workers: int = 0
    # schedule
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: int = 64  # global batch (split over DDP ranks), per optimiser micro-step
    accum_steps: int = 1
    optimizer: str = "adamw"
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    clip_grad: float | None = None
    # regularisation
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    ema: bool = False  # final weights: the EMA (eval_split=test), or the better of EMA/raw on val
    ema_decay: float = 0.999
    # precision / device
    amp: str = "none"
    device: str = "auto"
    threads: int | None = None
    # bookkeeping
    seed: int = 0
    output: str | None = None
    name: str | None = None
    checkpoint_every: int = 0  # optimiser steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: int = 2
    eval_every: int = 1  # epochs
    resume: bool = False
    quiet: bool = False
    tensorboard: bool = False
    plots: bool = True

    def validate(self) -> "TrainConfig":
        """Check values; raise ``ValueError`` naming the first bad option. Returns ``self``."""

        def positive(name: str, allow_none: bool = False, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or value < 0 or (value == 0 and not allow_zero):
                raise ValueError(
                    f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
                )

        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a model name, got {self.model!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a mapping, got {type(self.model_kwargs).__name__}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a data set name, got {self.data!r}")
        for name in ("epochs", "batch_size", "accum_steps", "lr", "keep_checkpoints", "eval_every"):
            positive(name)
        for name in ("image_size", "max_steps", "train_subset", "eval_subset", "clip_grad", "threads"):
            positive(name, allow_none=True)
        for name in ("min_lr", "weight_decay", "momentum", "warmup_epochs", "checkpoint_every",
                     "mixup", "cutmix", "num_workers", "drop_path_rate"):
            positive(name, allow_zero=True)
        positive("warmup_steps", allow_none=True, allow_zero=True)
        for name in ("label_smoothing", "mixup_prob", "ema_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.label_smoothing >= 1.0:
            raise ValueError(f"label_smoothing must be < 1, got {self.label_smoothing}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.amp not in _AMP:
            raise ValueError(f"amp must be one of {_AMP}, got {self.amp!r}")
        if self.eval_split not in ("val", "test"):
            raise ValueError(f"eval_split must be 'val' or 'test', got {self.eval_split!r}")
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for name in ("accelerate", "grad_checkpointing", "augment", "ema", "resume", "quiet",
                     "tensorboard", "plots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (lists instead of tuples), safe for YAML/JSON and ``weights_only`` loads."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


_FIELDS = {f.name: f for f in fields(TrainConfig)}


_OPTIONAL_INT = {"image_size", "max_steps", "train_subset", "eval_subset", "warmup_steps", "threads"}
_OPTIONAL_FLOAT = {"clip_grad"}


def _coerce(name: str, value: Any) -> Any:
    """Convert a parsed value to the field's type where that is unambiguous."""
    default = _FIELDS[name].default
    if value is None:
        return None
    if name in _OPTIONAL_INT:
        default = 0
    elif name in _OPTIONAL_FLOAT:
        default = 0.0
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; accept any float literal for numeric options
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if name == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"betas must be two numbers, e.g. betas=[0.9,0.999]; got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(default, (int, float)) and isinstance(value, str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return value


def _check_key(key: str) -> str:
    key = key.replace("-", "_")
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, list(_FIELDS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown config option {key!r}.{hint}")
    return key


def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Return ``base`` (default: defaults) updated with ``data``; unknown keys raise ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of option: value, got {type(data).__name__}")
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    cfg.model_kwargs = dict(cfg.model_kwargs)
    for raw_key, value in data.items():
        key = _check_key(str(raw_key))
        if key == "model_kwargs":
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ValueError(f"model_kwargs must be a mapping, got {value!r}")
            value = dict(value)
        setattr(cfg, key, _coerce(key, value))
    return cfg


def default_config_path() -> Path:
    """Path of the packaged default configuration (``largekernel/configs/default.yaml``)."""
    return Path(str(resources.files("largekernel") / "configs" / "default.yaml"))


def load_config(path: str | Path | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """Load a YAML config file on top of ``base``.

    Args:
        path: YAML file; ``None`` loads the packaged default config.
        base: Starting config (dataclass defaults when ``None``).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Invalid YAML, or unknown/ill-typed options.
    """
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    try:
        return config_from_dict(data, base)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (``["a", "b"]``, parsed value)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: keep the raw string (e.g. a path with odd characters)
    return key.split("."), value


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply ``key=value`` strings (dotted keys reach into ``model_kwargs``); returns a new config."""
    cfg = dataclasses.replace(cfg)
    cfg.model_kwargs = dict(cfg.model_kwargs)
    for text in overrides:
        parts, value = parse_override(text)
        key = _check_key(parts[0])
        if len(parts) == 1:
            cfg = config_from_dict({key: value}, cfg)
            continue
        target = getattr(cfg, key)
        if not isinstance(target, dict):
            raise ValueError(f"override {text!r}: option {key!r} is not a mapping")
        node = target
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return cfg
