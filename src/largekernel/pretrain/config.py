"""Pre-training configuration: every :class:`~largekernel.train.config.TrainConfig` option plus the
masked-image-modelling ones, read from YAML files and ``key=value`` overrides the same way."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from largekernel.pretrain.masking import check_mask_ratio
from largekernel.train import config as train_config
from largekernel.train.config import TrainConfig

__all__ = ["PretrainConfig", "load_pretrain_config", "pretrain_config_from_dict", "apply_pretrain_overrides",
           "default_pretrain_config_path", "PRETRAIN_KEYS"]


@dataclass
class PretrainConfig(TrainConfig):
    """A :class:`TrainConfig` (data, schedule, checkpoints, DDP, ...) plus masked-image-modelling options.

    Labels are never read. ``mixup``/``cutmix``/``ema``/``label_smoothing`` have no meaning here and
    must stay at their neutral values.

    Example:
        >>> cfg = apply_pretrain_overrides(PretrainConfig(), ["mask_ratio=0.75", "epochs=2"])
        >>> cfg.mask_ratio, cfg.epochs
        (0.75, 2)
    """

    mask_ratio: float = 0.6
    decoder_width: int | None = None  # decoder channels at the deepest scale (default: encoder's)
    norm_pix_loss: bool = True
    recon_images: int = 8  # images in the per-epoch reconstruction PNG (0: no PNG)

    def validate(self) -> "PretrainConfig":
        # this class's own options first: the shared schema check below converts their values
        # (true -> 1), after which a bool given for a count could no longer be told apart
        for name in ("decoder_width", "recon_images"):
            if isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, not true/false, got {getattr(self, name)!r}")
        super().validate()
        self._validate_own()
        for name in ("mixup", "cutmix", "label_smoothing"):
            if getattr(self, name):
                raise ValueError(f"{name} does not apply to masked pre-training (no labels); set {name}=0")
        if self.ema:
            raise ValueError("ema is not supported by masked pre-training; set ema=false")
        for name in ("init_from", "layer_decay"):  # fine-tuning options of `largekernel train`
            if getattr(self, name, None) is not None:
                raise ValueError(f"{name} is a fine-tuning option of `largekernel train`, not of pre-training; "
                                 f"set {name}=null")
        return self

    def _validate_own(self) -> None:
        check_mask_ratio(self.mask_ratio)
        if self.decoder_width is not None and (isinstance(self.decoder_width, bool)
                                               or not isinstance(self.decoder_width, int) or self.decoder_width < 1):
            raise ValueError(f"decoder_width must be a positive int or null, got {self.decoder_width!r}")
        if not isinstance(self.norm_pix_loss, bool):
            raise ValueError(f"norm_pix_loss must be true or false, got {self.norm_pix_loss!r}")
        if isinstance(self.recon_images, bool) or not isinstance(self.recon_images, int) or self.recon_images < 0:
            raise ValueError(f"recon_images must be a non-negative int, got {self.recon_images!r}")


PRETRAIN_KEYS = ("mask_ratio", "decoder_width", "norm_pix_loss", "recon_images")


def _coerce_own(key: str, value: Any) -> Any:
    if key == "mask_ratio" and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"mask_ratio must be a number, got {value!r}") from None
    if key in ("decoder_width", "recon_images") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def pretrain_config_from_dict(data: Mapping[str, Any], base: PretrainConfig | None = None) -> PretrainConfig:
    """``base`` (default: defaults) updated with ``data``; unknown keys raise ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of option: value, got {type(data).__name__}")
    base = base if base is not None else PretrainConfig()
    own = {str(k).replace("-", "_"): v for k, v in data.items() if str(k).replace("-", "_") in PRETRAIN_KEYS}
    rest = {k: v for k, v in data.items() if str(k).replace("-", "_") not in PRETRAIN_KEYS}
    cfg = train_config.config_from_dict(rest, base)  # dataclasses.replace keeps the subclass
    for key, value in own.items():
        setattr(cfg, key, _coerce_own(key, value))
    return cfg


def default_pretrain_config_path() -> Path:
    """The packaged default pre-training config (``largekernel/configs/pretrain_digits.yaml``)."""
    return Path(str(resources.files("largekernel") / "configs" / "pretrain_digits.yaml"))


def load_pretrain_config(path: str | Path | None = None, base: PretrainConfig | None = None) -> PretrainConfig:
    """Load a YAML pre-training config (``None``: the packaged default) on top of ``base``."""
    path = Path(path) if path is not None else default_pretrain_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    try:
        return pretrain_config_from_dict(data, base)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def apply_pretrain_overrides(cfg: PretrainConfig, overrides: Iterable[str]) -> PretrainConfig:
    """Apply ``key=value`` strings (dotted keys reach into ``model_kwargs``); returns a new config."""
    cfg = dataclasses.replace(cfg)
    rest = []
    for text in overrides:
        parts, value = train_config.parse_override(text)
        key = parts[0].replace("-", "_")
        if key in PRETRAIN_KEYS and len(parts) == 1:
            cfg = pretrain_config_from_dict({key: value}, cfg)
        else:
            rest.append(text)
    return train_config.apply_overrides(cfg, rest)
