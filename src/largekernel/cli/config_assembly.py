"""Assemble a run's configuration from defaults, ``--config``, flags and ``key=value`` overrides.

``train`` and ``pretrain`` layer their options the same way (packaged default, then a YAML file,
then the explicit flags, then overrides; ``--resume`` without ``--config`` starts from the
configuration stored in the latest checkpoint). Only the config class differs, so each command
describes its class with a :class:`ConfigKind` and calls :func:`assemble_config`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ConfigKind", "assemble_config", "parse_model_kwargs"]


@dataclass(frozen=True)
class ConfigKind:
    """How one command's configuration class is loaded, updated and overridden.

    Attributes:
        load: ``load(path)`` reads a YAML file; ``load(None)`` gives the packaged default.
        from_dict: ``from_dict(data, base)`` returns ``base`` updated with ``data`` (raises
            ``ValueError`` on an unknown key or a bad value).
        apply_overrides: ``apply_overrides(cfg, ["key=value", ...])`` returns a new config.

    Example:
        >>> from largekernel.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
        >>> kind = ConfigKind(load=lambda p: load_config(p, TrainConfig()), from_dict=config_from_dict,
        ...                   apply_overrides=apply_overrides)
        >>> kind.apply_overrides(kind.load(None), ["epochs=2"]).epochs
        2
    """

    load: Callable[[str | None], Any]
    from_dict: Callable[[Mapping[str, Any], Any], Any]
    apply_overrides: Callable[[Any, list[str]], Any]


def parse_model_kwargs(text: str | None) -> dict | None:
    """The ``--model-kwargs`` JSON object, or ``None`` when the flag was not given.

    Raises:
        ValueError: Not valid JSON, or JSON that is not an object.
    """
    if not text:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"--model-kwargs must be a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise ValueError("--model-kwargs must be a JSON object like '{\"dims\": [16, 32, 64, 128]}'")
    return value


def _asks_for_resume(explicit: Mapping[str, Any], overrides: Iterable[str]) -> bool:
    return bool(explicit.get("resume")) or any(
        o.replace("-", "_").lower() in ("resume=true", "resume=yes") for o in overrides)


def _stored_config(output: str, kind: ConfigKind) -> Any:
    """The configuration saved in the latest checkpoint of run directory ``output``."""
    from largekernel.errors import CheckpointError
    from largekernel.train import checkpointing as ckpt

    latest = ckpt.latest_checkpoint(output)
    if latest is None:
        raise FileNotFoundError(f"--resume: no checkpoint found in {Path(output) / ckpt.CHECKPOINT_DIR}")
    try:
        return kind.from_dict(ckpt.load_training_checkpoint(latest)["config"], None)
    except ValueError as err:
        raise CheckpointError(f"{latest}: invalid stored config: {err}") from None


def assemble_config(args: argparse.Namespace, keys: Iterable[str], kind: ConfigKind) -> Any:
    """Build and validate a config from parsed arguments.

    Args:
        args: The parsed command line: ``config``, ``model_kwargs``, ``overrides`` and one attribute
            per key of ``keys`` (``None`` when that flag was not given).
        keys: Config keys that have a flag.
        kind: The config class's loader, updater and override parser.

    Returns:
        The validated config.

    Raises:
        ValueError: A bad flag value, override or file; ``--resume`` without ``--output``.
        FileNotFoundError: ``--resume`` with no checkpoint in ``--output``.
    """
    explicit = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    model_kwargs = parse_model_kwargs(args.model_kwargs)
    overrides = list(args.overrides or [])
    output = explicit.get("output")
    if _asks_for_resume(explicit, overrides) and not args.config and output:
        base = _stored_config(output, kind)  # --resume alone continues the stored configuration
    else:
        base = kind.load(args.config)
    if model_kwargs is not None:
        explicit["model_kwargs"] = model_kwargs
    cfg = kind.apply_overrides(kind.from_dict(explicit, base), overrides)
    if (cfg.model != base.model and model_kwargs is None
            and not any(o.startswith("model_kwargs") for o in overrides)):
        # a different model: the base config's kwargs (dims, kernel sizes, stem) would not fit it
        cfg.model_kwargs = {}
    if cfg.resume and not cfg.output:
        raise ValueError("--resume needs --output DIR (the run directory to continue)")
    return cfg.validate()
