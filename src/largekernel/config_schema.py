"""One validated schema for every option a user can give largekernel.

HOW TO ADD AN OPTION (read this first)
--------------------------------------
* A ``largekernel train`` key: add ONE annotated field to :class:`TrainConfig` below, e.g.::

      task: Literal["classify", "segment"] = "classify"      # enum
      init_from: OptionalPath = None                          # a file path or None
      spatial_dims: Annotated[int, NotBool, Field(ge=1, le=3)] = 2

  The annotation is the whole contract: type, range, finiteness and enum values are checked by
  pydantic from it, in YAML files, ``key=value`` overrides, ``--flags`` and resumed checkpoints
  alike, and a bad value gives ``ConfigError("<key> must be <expected>, got <value>")``. Pick a
  ready-made type from the "building blocks" section (``Count``, ``PositiveFloat``, ``Fraction``,
  ...) or write ``Annotated[type, Field(...)]``. A rule that involves two keys goes in
  :meth:`TrainConfig.cross_field_problems`. A ``--flag`` for it is optional (see
  ``largekernel/cli/train.py``); ``key=value`` works as soon as the field exists.
* ``evaluate`` / ``predict`` / ``info`` options: add a field to :class:`EvaluateOptions`,
  :class:`PredictOptions` or :class:`InfoOptions`.
* ``model.json`` (the document saved next to a ``.safetensors`` checkpoint): add a field to
  :class:`CheckpointDocument` (top level) or :class:`DataInfo` (``metadata.data``). Unknown keys in
  ``metadata`` and ``metadata.data`` are kept, so new writers do not break old readers.

Errors: every validation failure becomes :class:`largekernel.errors.ConfigError` (a
``ValueError``) with a one-line message; loaders wrap it in ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic_core import PydanticCustomError
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      model_validator)

from largekernel.errors import ConfigError

__all__ = [
    "TrainConfig",
    "EvaluateOptions",
    "PredictOptions",
    "InfoOptions",
    "CheckpointDocument",
    "DataInfo",
    "ModelConfig",
    "validate_field",
    "validate_model",
    "format_validation_error",
    "check_finite_tree",
    "CHECKPOINT_FORMAT_VERSION",
]

CHECKPOINT_FORMAT_VERSION = 1
_MAX_COUNT = 2**31 - 1  # counts beyond this are typos, and overflow int32 tensors downstream
_MAX_TREE_NODES = 100_000
_MAX_SIDE = 2**20  # a 1M-pixel side; anything that passes is still checked by the memory estimate


# ----------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------
def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1; for a number option that is always a mistake
    if isinstance(value, bool):
        raise PydanticCustomError("not_bool", "a number, not true/false")
    return value


def check_finite_tree(value: Any, where: str = "value") -> Any:
    """Raise ``ValueError`` if a nested list/dict holds a NaN or infinite float, or a non-str key.

    Example:
        >>> check_finite_tree({"dims": [8, 16]}, "model_kwargs")
        {'dims': [8, 16]}
    """
    stack = [(where, value)]
    seen = 0
    while stack:
        path, node = stack.pop()
        seen += 1
        if seen > _MAX_TREE_NODES:  # YAML aliases can make a tiny file a huge tree
            raise ValueError(f"{where} is too large (more than {_MAX_TREE_NODES} values)")
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{path} must be finite, got {node!r}")
        if isinstance(node, Mapping):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise ValueError(f"{path} keys must be strings, got {k!r}")
                stack.append((f"{path}.{k}", v))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
    return value


def _finite_tree(value: Any) -> Any:
    try:
        return check_finite_tree(value, "")
    except ValueError as err:
        raise PydanticCustomError("finite_tree", "{problem}", {"problem": str(err).lstrip(".")}) from None


def _finite_number(value: Any) -> Any:
    # checked before the range, so `lr=nan` says "finite" rather than "must be > 0"
    if isinstance(value, bool):
        raise PydanticCustomError("not_bool", "a number, not true/false")
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value  # let the type check word the error
    if isinstance(number, float) and not math.isfinite(number):
        raise PydanticCustomError("finite_number", "finite")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("expected", "a path without NUL characters")
    return value


def _plain_name(value: str) -> str:
    # `name` becomes runs/<name>: it must not climb out of runs/ or name a nested path
    if value in (".", "..") or any(c in value for c in "/\\\x00"):
        raise PydanticCustomError("expected", "a plain name without '/', '\\\\' or NUL (and not '.' or '..')")
    return value


NotBool = BeforeValidator(_reject_bool)
Finite = BeforeValidator(_finite_number)
Count = Annotated[int, NotBool, Field(ge=1, le=_MAX_COUNT)]
NonNegativeInt = Annotated[int, NotBool, Field(ge=0, le=_MAX_COUNT)]
Side = Annotated[int, NotBool, Field(ge=1, le=_MAX_SIDE)]
Channels = Annotated[int, NotBool, Field(ge=1, le=65536)]
PositiveFloat = Annotated[float, Finite, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Finite, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Finite, Field(ge=0, le=1, allow_inf_nan=False)]  # [0, 1]
OpenFraction = Annotated[float, Finite, Field(ge=0, lt=1, allow_inf_nan=False)]  # [0, 1)
FiniteFloat = Annotated[float, Finite, Field(allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
PathStr = Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]
OptionalPath = Optional[PathStr]
PlainName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_plain_name)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|(cuda|xpu)(:\d{1,3})?)$")]
FiniteMapping = Annotated[dict[str, Any], AfterValidator(_finite_tree)]
Seed = Annotated[int, NotBool, Field(ge=0, le=2**32 - 1)]  # numpy's seed range


# ----------------------------------------------------------------------------------------
# error messages
# ----------------------------------------------------------------------------------------
def _expected(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("int_parsing", "int_type"):
        return "a number (an integer)"
    if kind == "int_from_float":
        return "an integer"
    if kind in ("float_parsing", "float_type"):
        return "a number"
    if kind == "finite_number":
        return "a finite number (not NaN or infinity)"
    if kind in ("bool_parsing", "bool_type"):
        return "true or false"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values())) if ctx else "?"
        return f"{op} {bound}"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "string_type":
        return "a string"
    if kind in ("dict_type", "model_type", "dataclass_type"):
        return "a mapping of key: value"
    if kind in ("list_type", "tuple_type"):
        return "a list"
    if kind == "string_too_short":
        return "a non-empty string"
    if kind == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern')}"
    if kind in ("too_short", "too_long"):
        return f"a list of {ctx.get('min_length', ctx.get('max_length'))} items"
    if kind == "missing":
        return "given (it is required)"
    if kind == "extra_forbidden":
        return "absent (unknown key)"
    if kind == "expected":  # custom rules word what they expect themselves
        return str(err.get("msg"))
    if kind == "not_bool":
        return "a number, not true/false"
    if kind == "finite_tree":
        return f"free of NaN/infinity and string-keyed ({ctx.get('problem')})"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    return str(err.get("msg", kind))


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line naming each bad key, its value and what was expected (first three problems).

    Example:
        >>> try:
        ...     PredictOptions(top_k=0)
        ... except ValidationError as err:
        ...     format_validation_error(err)
        'top_k must be >= 1, got 0'
    """
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or prefix.rstrip(".") or "value"
        if prefix and err["loc"]:
            loc = prefix + loc
        if err["type"] == "missing":
            parts.append(f"{loc} is required")
        elif err["type"] == "value_error":  # a cross-field rule: its message is the whole story
            parts.append(f"{loc}: {(err.get('ctx') or {}).get('error', err.get('msg'))}")
        else:
            parts.append(f"{loc} must be {_expected(err)}, got {_short(err.get('input'))}")
    if len(errors) > 3:
        parts.append(f"... ({len(errors) - 3} more)")
    return "; ".join(parts)


def _raise_config_error(exc: ValidationError, prefix: str = "", where: str = "") -> typing.NoReturn:
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {}
    key = prefix + ".".join(str(p) for p in first.get("loc", ()))
    message = format_validation_error(exc, prefix)
    raise ConfigError(f"{where}: {message}" if where else message, key=key or None,
                      value=first.get("input")) from None


# ----------------------------------------------------------------------------------------
# largekernel train
# ----------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that defines a training run (each field's annotation is its validation rule).

    Example:
        >>> from largekernel.train.config import TrainConfig, apply_overrides
        >>> cfg = apply_overrides(TrainConfig(), ["epochs=2", "model_kwargs.dims=[8,16,32,64]"])
        >>> cfg.epochs, cfg.model_kwargs["dims"]
        (2, [8, 16, 32, 64])
    """

    # task: "segment" trains largekernel.tasks.segmentation models (`model` is then the backbone);
    # its options (decoder, deep_supervision, ...) are checked by tasks/segmentation/options.py
    task: Literal["classify", "segment"] = "classify"
    segmentation: FiniteMapping = field(default_factory=dict)
    # model
    model: NonEmptyStr = "unireplknet_a"
    model_kwargs: FiniteMapping = field(default_factory=dict)
    drop_path_rate: OpenFraction = 0.0
    accelerate: bool = True  # false: PyTorch's own layers everywhere (largekernel.to_torch_convs), a baseline
    # torch.compile the training forward (with accelerate: the engine inside the graph, see
    # largekernel.accelerate(compile=True)); checkpoints keep the un-compiled module's keys
    compile: bool = False
    grad_checkpointing: bool = False
    init_from: OptionalPath = None  # fine-tune: backbone weights from `largekernel pretrain`, fresh head
    # data
    data: NonEmptyStr = "digits"
    data_root: OptionalPath = None
    image_size: Optional[Side] = None
    augment: bool = True
    train_subset: Optional[Count] = None  # use only the first N training samples (smoke tests)
    train_subset_per_class: Optional[Count] = None  # few-label runs: the first N training samples of each class
    eval_subset: Optional[Count] = None
    eval_split: Literal["val", "test"] = "test"
    num_workers: Annotated[int, NotBool, Field(ge=0, le=256)] = 0
    bad_images: Literal["error", "skip"] = "error"  # folder: data sets: corrupt files stop or are skipped
    # schedule
    epochs: Count = 30
    max_steps: Optional[Count] = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: Count = 64  # global batch (split over DDP ranks), per optimiser micro-step
    accum_steps: Count = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 2e-3
    min_lr: NonNegativeFloat = 1e-5
    weight_decay: NonNegativeFloat = 0.05
    momentum: Fraction = 0.9
    betas: tuple[OpenFraction, OpenFraction] = (0.9, 0.999)
    warmup_epochs: NonNegativeFloat = 1.0
    warmup_steps: Optional[NonNegativeInt] = None  # overrides warmup_epochs when set
    clip_grad: Optional[PositiveFloat] = None
    # fine-tuning: lr x layer_decay**(blocks below the head), see largekernel.pretrain.layer_decay
    layer_decay: Optional[Annotated[float, Finite, Field(gt=0, le=1, allow_inf_nan=False)]] = None
    # regularisation
    label_smoothing: OpenFraction = 0.0
    mixup: NonNegativeFloat = 0.0
    cutmix: NonNegativeFloat = 0.0
    mixup_prob: Fraction = 1.0
    ema: bool = False  # final weights: the EMA (eval_split=test), or the better of EMA/raw on val
    ema_decay: Fraction = 0.999
    # precision / device / resources
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: Device = "auto"
    threads: Optional[Annotated[int, NotBool, Field(ge=1, le=4096)]] = None
    allow_large: bool = False  # run even when the memory estimate exceeds the available memory
    # bookkeeping
    seed: Seed = 0
    output: OptionalPath = None
    name: Optional[PlainName] = None
    checkpoint_every: NonNegativeInt = 0  # optimiser steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: Count = 2
    eval_every: Count = 1  # epochs
    resume: bool = False
    quiet: bool = False
    tensorboard: bool = False
    plots: bool = True

    def cross_field_problems(self) -> list[str]:
        """Rules involving several keys (each problem as one phrase)."""
        problems = []
        if self.min_lr > self.lr:
            problems.append(f"min_lr ({self.min_lr!r}) must be <= lr ({self.lr!r})")
        return problems

    def validate(self) -> "TrainConfig":
        """Check (and normalise, e.g. ``"1e-3"`` -> ``0.001``) every field, then the cross-field rules.

        Returns:
            ``self``, with values coerced to the declared types.

        Raises:
            ConfigError: Naming the first bad key, its value and what was expected.
        """
        for f in dataclasses.fields(self):
            setattr(self, f.name, validate_field(type(self), f.name, getattr(self, f.name)))
        problems = self.cross_field_problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (lists instead of tuples), safe for YAML/JSON and ``weights_only`` loads."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


@functools.lru_cache(maxsize=None)
def _field_adapters(cls: type) -> dict[str, TypeAdapter]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


def validate_field(cls: type, name: str, value: Any) -> Any:
    """Validate/coerce ``value`` for field ``name`` of the dataclass ``cls`` (e.g. :class:`TrainConfig`).

    Raises:
        ConfigError: ``"<name> must be <expected>, got <value>"``.

    Example:
        >>> validate_field(TrainConfig, "lr", "1e-3")
        0.001
    """
    adapter = _field_adapters(cls)[name]
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        loc = ".".join([name, *map(str, errors[0]["loc"])]) if errors else name
        raise ConfigError(format_validation_error(exc, prefix=f"{name}."), key=loc, value=value) from None


# ----------------------------------------------------------------------------------------
# evaluate / predict / info
# ----------------------------------------------------------------------------------------
class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EvaluateOptions(_Options):
    """Numeric options of ``largekernel evaluate``.

    Example:
        >>> EvaluateOptions(limit=10).batch_size
        128
    """

    batch_size: Count = 128
    limit: Optional[Count] = None
    image_size: Optional[Side] = None
    split: Literal["train", "val", "test"] = "test"
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: Device = "auto"
    compile: bool = False  # torch.compile the model before evaluating
    int8: Optional[Literal["onnxruntime"]] = None  # also evaluate a post-training int8 model
    calibration_batches: Count = 8  # batches of 32 training images for the int8 calibration


class PredictOptions(_Options):
    """Numeric options of ``largekernel predict``."""

    top_k: Count = 3
    device: Device = "auto"


class InfoOptions(_Options):
    """Numeric options of ``largekernel info``."""

    image_size: Optional[Side] = None
    in_chans: Optional[Channels] = None
    model_kwargs: Optional[FiniteMapping] = None


# ----------------------------------------------------------------------------------------
# model.json (next to a .safetensors checkpoint) and the model config in training checkpoints
# ----------------------------------------------------------------------------------------
def _format_version(value: str) -> str:
    m = re.fullmatch(r"largekernel-checkpoint-v(\d+)", value)
    if not m:
        raise PydanticCustomError("expected", "'largekernel-checkpoint-v<N>'")
    if int(m.group(1)) > CHECKPOINT_FORMAT_VERSION:
        raise PydanticCustomError("expected", "a format this version reads (<= v{v}; upgrade largekernel)",
                                  {"v": CHECKPOINT_FORMAT_VERSION})
    return value


class DataInfo(BaseModel):
    """``metadata.data``: the data set a model was trained on (fields present are checked)."""

    model_config = ConfigDict(extra="allow")

    name: Optional[str] = None
    spec: Optional[str] = None
    num_classes: Optional[Count] = None
    in_chans: Optional[Channels] = None
    image_size: Optional[Side | list[Side]] = None
    class_names: Optional[list[str]] = None
    mean: Optional[list[FiniteFloat]] = None
    std: Optional[list[PositiveFloat]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "DataInfo":
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}")
        if self.in_chans is not None and self.mean is not None and len(self.mean) != self.in_chans:
            raise ValueError(f"mean must have in_chans={self.in_chans} values, got {len(self.mean)}")
        if self.num_classes is not None and self.class_names is not None \
                and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names must have num_classes={self.num_classes} names, "
                             f"got {len(self.class_names)}")
        return self


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: Optional[DataInfo] = None


class ModelConfig(BaseModel):
    """``{"name", "kwargs"}``: how to rebuild a model with ``create_model``."""

    model_config = ConfigDict(extra="ignore")

    name: NonEmptyStr
    kwargs: FiniteMapping = Field(default_factory=dict)


class CheckpointDocument(ModelConfig):
    """The JSON document written next to (and inside) a ``.safetensors`` checkpoint.

    Example:
        >>> doc = {"format": "largekernel-checkpoint-v1", "name": "unireplknet_a", "form": "deploy"}
        >>> validate_model(CheckpointDocument, doc).form
        'deploy'
    """

    name: Optional[str] = None  # None: saved from a model not made by create_model (not rebuildable)
    format: Annotated[str, AfterValidator(_format_version)]
    form: Literal["train", "deploy"] = "train"
    metadata: _Metadata = Field(default_factory=_Metadata)


def validate_model(schema: type[BaseModel], data: Any, where: str = "") -> BaseModel:
    """Validate ``data`` against a pydantic ``schema``; errors become one-line ``ConfigError``.

    Args:
        schema: e.g. :class:`CheckpointDocument`.
        data: The parsed document (must be a mapping).
        where: Prefix naming the source (a file), e.g. ``"runs/a/model.json"``.

    Example:
        >>> validate_model(ModelConfig, {"name": "unireplknet_a"}).kwargs
        {}
    """
    if not isinstance(data, Mapping):
        msg = f"must be a JSON object (a mapping of key: value), got {type(data).__name__}"
        raise ConfigError(f"{where}: {msg}" if where else msg, value=data)
    try:
        return schema.model_validate(dict(data))
    except ValidationError as exc:
        _raise_config_error(exc, where=where)
