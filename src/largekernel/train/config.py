"""Training configuration: a dataclass, YAML files and ``key=value`` command-line overrides.

Precedence (lowest to highest): the dataclass defaults, the packaged ``configs/default.yaml``
(when no ``--config`` is given), a user YAML file, explicit command-line flags, and finally
positional ``key=value`` overrides. Dotted keys reach into dict-valued fields
(``model_kwargs.dims=[16,32,64,128]``). Values are parsed as YAML scalars/lists, so
``epochs=3``, ``amp=bf16``, ``ema=true`` and ``model_kwargs.kernel_sizes=[[3],[13,13]]`` work.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from largekernel.config_schema import TrainConfig, validate_field
from largekernel.errors import ConfigError

__all__ = [
    "TrainConfig",
    "load_config",
    "default_config_path",
    "apply_overrides",
    "parse_override",
    "config_from_dict",
]

log = logging.getLogger(__name__)

# The option schema (types, ranges, enums) lives in one place: largekernel.config_schema.TrainConfig.
# To add a training option, add a field there (see the note at the top of that module).

_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Validate and convert one parsed value with the field's schema (raises ``ConfigError``)."""
    if name == "model_kwargs" and value is None:
        value = {}
    if name == "model_kwargs" and isinstance(value, Mapping):
        value = dict(value)
    return validate_field(TrainConfig, name, value)


def _check_key(key: str) -> str:
    key = key.replace("-", "_")
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, list(_FIELDS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config option {key!r}.{hint}", key=key)
    return key


def _copy(cfg: TrainConfig) -> TrainConfig:
    # model_kwargs is nested: a dotted override must never write into the caller's config
    out = dataclasses.replace(cfg)
    out.model_kwargs = copy.deepcopy(dict(cfg.model_kwargs))
    out.segmentation = copy.deepcopy(dict(cfg.segmentation))
    return out


def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Return ``base`` (default: defaults) updated with ``data``.

    Every value is checked against the schema (:class:`largekernel.config_schema.TrainConfig`) as it
    is set; rules that involve several keys are checked by :meth:`TrainConfig.validate`.

    Raises:
        ConfigError: Unknown key (with suggestions), or a value of the wrong type/range.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of option: value, got {type(data).__name__}")
    cfg = _copy(base) if base is not None else TrainConfig()
    for raw_key, value in data.items():
        key = _check_key(str(raw_key))
        if key == "model_kwargs" and value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"model_kwargs must be a mapping, got {value!r}", key=key, value=value)
        setattr(cfg, key, _coerce(key, value))
    return cfg


def default_config_path() -> Path:
    """Path of the packaged default configuration (``largekernel/configs/default.yaml``)."""
    return Path(str(resources.files("largekernel") / "configs" / "default.yaml"))


_MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; megabytes are a wrong file


def load_config(path: str | Path | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """Load a YAML config file on top of ``base``.

    Args:
        path: YAML file; ``None`` loads the packaged default config.
        base: Starting config (dataclass defaults when ``None``).

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: Unreadable file, invalid YAML, or unknown/ill-typed options (a ``ValueError``).
    """
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {_MAX_CONFIG_BYTES} bytes; "
                              f"is it really a YAML config?")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        return config_from_dict(data, base)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}", key=err.key, value=err.value) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (``["a", "b"]``, parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: keep the raw string (e.g. a path with odd characters)
    return key.split("."), value


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply ``key=value`` strings (dotted keys reach into ``model_kwargs``); returns a new config.

    Raises:
        ConfigError: Malformed override, unknown key, or a value of the wrong type/range.
    """
    cfg = _copy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        key = _check_key(parts[0])
        if len(parts) == 1:
            cfg = config_from_dict({key: value}, cfg)
            continue
        target = getattr(cfg, key)
        if not isinstance(target, dict):
            raise ConfigError(f"override {text!r}: option {key!r} is not a mapping", key=key)
        node = target
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a mapping", key=key)
        node[parts[-1]] = value
        setattr(cfg, key, _coerce(key, target))  # e.g. model_kwargs.x=nan is refused here
    return cfg
