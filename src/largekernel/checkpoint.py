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

from largekernel.errors import CheckpointError, CheckpointNotFoundError, ConfigError

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "create_model_from", "config_path_for",
           "read_safetensors_header", "read_checkpoint_document", "build_model_checked"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
_PREFIXES = ("module.", "_orig_mod.")
_FORMAT_VERSION = 1
_MAX_JSON_BYTES = 16 << 20  # model.json is a few KB; more is not a config
# safetensors dtype names -> bytes per element
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
              "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


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


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor names -> ``(dtype, shape)`` from a ``.safetensors`` header, without reading any tensor.

    The header is checked against the file: known dtypes, non-negative integer shapes, and byte
    ranges that match the shapes and lie inside the file.

    Raises:
        CheckpointError: Naming the file and the offending key.

    Example:
        >>> import largekernel, tempfile, os
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10)
        >>> p = largekernel.save_checkpoint(m, os.path.join(tempfile.mkdtemp(), "a.safetensors"))
        >>> read_safetensors_header(p)["head.weight"]
        ('F32', (10, 320))
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a valid safetensors file: shorter than its 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > min(100_000_000, size - 8):
                raise CheckpointError(f"{path} is not a valid safetensors file: header length {n} exceeds the file "
                                      f"({size} bytes) or the 100 MB limit")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: header is a {type(header).__name__}, "
                              f"not a JSON object")
    data_len = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise CheckpointError(f"{path}: header key '__metadata__' must map strings to strings")
            continue
        where = f"{path}: header entry {key!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object with dtype/shape/data_offsets")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ST_DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r} (expected one of {sorted(_ST_DTYPES)})")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise CheckpointError(f"{where}: data_offsets {offsets!r} must be [begin, end] inside the "
                                  f"{data_len}-byte data section")
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * _ST_DTYPES[dtype]:
            raise CheckpointError(f"{where}: shape {tuple(shape)} of {dtype} needs {numel * _ST_DTYPES[dtype]} "
                                  f"bytes but data_offsets span {offsets[1] - offsets[0]}")
        out[key] = (dtype, tuple(shape))
    return out


def _read_file(path: pathlib.Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    if _is_safetensors(path):
        read_safetensors_header(path)  # a clear error naming the key before safetensors parses it
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors is a dependency
            raise CheckpointError("reading .safetensors files needs the 'safetensors' package") from exc
        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file: {_one_line(exc)}") from None
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (weights_only=True rejected it; "
            f"it may contain arbitrary Python objects or code). Details: {_one_line(exc)}"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"could not read checkpoint {path}: {type(exc).__name__}: {_one_line(exc)}") from None


def _torch_load(path: pathlib.Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file allows (nothing copied to RAM yet)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise
    except Exception:  # legacy (non-zip) files cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] + ("..." if len(text) > 500 else "")


def _unwrap(obj: Any, source: object = "checkpoint") -> dict[str, torch.Tensor]:
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
        raise CheckpointError(f"{source} does not contain a state dict (got {type(obj).__name__})")
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
            f"{source} contains no tensors (top-level keys: {sorted(map(str, obj))[:10]})"
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
    *,
    source: str | os.PathLike | None = None,
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
        source: Where an in-memory state dict came from (named in errors).

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
    if source is None and isinstance(path_or_state_dict, (str, os.PathLike)):
        source = path_or_state_dict
    where = f"checkpoint {source}" if source is not None else "the state dict"
    state = _unwrap(raw, where)
    missing, unexpected, mismatched = _diff(model, state)
    if (missing or unexpected) and not mismatched and strict and _is_deploy_model(model):
        converted = _convert_training_to_deploy(model, state)
        if converted is not None:
            state = converted
            missing, unexpected, mismatched = _diff(model, state)
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{where} does not fit {type(model).__name__}: {_format_problems(missing, unexpected, mismatched)}"
        )
    if missing or unexpected:
        logger.warning("non-strict load: %s", _format_problems(missing, unexpected, []))
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: {_one_line(exc)}") from None
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
        OutputError: A file cannot be written (a ``ValueError``; the path is named).

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
    from largekernel.utils.output import write_output  # OSError -> OutputError naming the file

    write_output(path, lambda f: f.write(blob))
    write_output(config_path_for(path), lambda f: f.write(text.encode("utf-8")))
    logger.info("saved %d tensors to %s", len(tensors), path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _parse_document(text: str | bytes, source: object) -> dict:
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"invalid config file {source}: not JSON ({_one_line(exc)})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"invalid config file {source}: must be a JSON object, got {type(doc).__name__}")
    return doc


def read_checkpoint_document(path: str | os.PathLike, *, validate: bool = True) -> dict:
    """The JSON document of a ``.safetensors`` checkpoint (``model.json`` next to it, or embedded).

    Args:
        path: The ``.safetensors`` file.
        validate: Check it against :class:`largekernel.config_schema.CheckpointDocument` (types,
            ranges, the ``format`` version, ``metadata.data``).

    Returns:
        The document as a plain dict.

    Raises:
        CheckpointError: Missing, unreadable or malformed document (the file and key are named).

    Example:
        >>> import largekernel, tempfile, os
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10)
        >>> p = largekernel.save_checkpoint(m, os.path.join(tempfile.mkdtemp(), "a.safetensors"))
        >>> read_checkpoint_document(p)["form"]
        'train'
    """
    path = pathlib.Path(path)
    cfg_path = config_path_for(path)
    if cfg_path.is_file():
        try:
            if cfg_path.stat().st_size > _MAX_JSON_BYTES:
                raise CheckpointError(f"invalid config file {cfg_path}: larger than {_MAX_JSON_BYTES} bytes")
            doc = _parse_document(cfg_path.read_bytes(), cfg_path)
        except OSError as exc:
            raise CheckpointError(f"cannot read config file {cfg_path}: {exc}") from None
        source = cfg_path
    else:
        # fall back to the copy embedded in the safetensors header
        header_meta = _embedded_metadata(path)
        text = header_meta.get("largekernel_config")
        if not text:
            raise CheckpointError(f"no config found for {path} (expected {cfg_path} or embedded metadata)")
        source = f"{path} (embedded config)"
        doc = _parse_document(text, source)
    if validate:
        from largekernel.config_schema import CheckpointDocument, validate_model

        try:
            validate_model(CheckpointDocument, doc)
        except ConfigError as exc:
            raise CheckpointError(f"invalid config file {source}: {exc}") from None
    return doc


def _embedded_metadata(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    read_safetensors_header(path)  # validates the header before safetensors sees it
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {_one_line(exc)}") from None


def _shape_problems(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> tuple[list[str], list[str], list[str]]:
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(shapes[k])} vs model {own[k]}"
                  for k in sorted(set(own) & set(shapes)) if tuple(shapes[k]) != own[k]]
    return missing, unexpected, mismatched


def build_model_checked(name: object, kwargs: object, *, source: object,
                        shapes: Mapping[str, tuple[int, ...]] | None = None, deploy: bool = False,
                        allow_large: bool = False) -> nn.Module:
    """Build ``create_model(name, **kwargs)`` only after checking it against the checkpoint's tensors.

    The model is first built on the meta device (no memory), its parameter shapes compared with
    ``shapes`` (tensor name -> shape, e.g. from a safetensors header), and its size compared with
    the available memory. Only then is it built for real.

    Args:
        name: Registered model name (from the checkpoint's config).
        kwargs: Its keyword arguments.
        source: The file, named in every error.
        shapes: Tensor shapes stored in the checkpoint (``None``: skip the comparison).
        deploy: Build the deploy (reparameterised) form.
        allow_large: Build even if the model seems larger than the available memory.

    Raises:
        CheckpointError: Unknown model, kwargs the model rejects, shapes that do not fit (each
            mismatch names the key and both shapes), or a model too large for this machine.

    Example:
        >>> m = build_model_checked("unireplknet_a", {"num_classes": 3}, source="example")
        >>> m.num_classes
        3
    """
    from largekernel.config_schema import ModelConfig, validate_model
    from largekernel.models.registry import create_model, is_model, model_entrypoint
    from largekernel.utils.memory import check_memory, meta_model, tensor_bytes

    if not name:
        raise CheckpointError(f"the config of {source} does not name a registered model "
                              f"(saved without create_model?)")
    try:
        cfg = validate_model(ModelConfig, {"name": name, "kwargs": kwargs if kwargs is not None else {}})
    except ConfigError as exc:
        raise CheckpointError(f"{source}: invalid model config: {exc}") from None
    name, kwargs = cfg.name, dict(cfg.kwargs)
    if not is_model(name):
        raise CheckpointError(f"{source}: model name {name!r} is not a registered model")
    if deploy and "deploy" in inspect.signature(model_entrypoint(name)).parameters:
        kwargs["deploy"] = True
        needs_reparam = False
    else:
        needs_reparam = deploy

    def build() -> nn.Module:
        model = create_model(name, **kwargs)
        if needs_reparam:
            from largekernel.reparam import reparameterize

            model = reparameterize(model, inplace=True)
        return model

    try:
        skeleton = meta_model(build)
    except Exception as exc:  # the kwargs do not build this model: a config problem, named
        raise CheckpointError(f"{source}: kwargs {kwargs!r} do not build {name!r}: "
                              f"{type(exc).__name__}: {_one_line(exc)}") from None
    if skeleton is not None:
        if shapes is not None:
            missing, unexpected, mismatched = _shape_problems(skeleton, shapes)
            # key-only differences of a deploy model may still convert from a training checkpoint
            if mismatched or ((missing or unexpected) and not deploy):
                raise CheckpointError(f"{source} does not fit {name} with its saved kwargs: "
                                      f"{_format_problems(missing, unexpected, mismatched)}")
        check_memory(2 * tensor_bytes(skeleton, 4), f"loading {name} from {source}", allow_large=allow_large,
                     override="allow_large=True")
        del skeleton
    try:
        return build()
    except Exception as exc:
        raise CheckpointError(f"{source}: kwargs {kwargs!r} do not build {name!r}: "
                              f"{type(exc).__name__}: {_one_line(exc)}") from None


def _file_shapes(path: pathlib.Path) -> dict[str, tuple[int, ...]]:
    if _is_safetensors(path):
        return {k: shape for k, (_, shape) in read_safetensors_header(path).items()}
    return {k: tuple(v.shape) for k, v in _unwrap(_read_file(path), f"checkpoint {path}").items()}


def create_model_from(path: str | os.PathLike, *, allow_large: bool = False) -> nn.Module:
    """Rebuild a model saved by :func:`save_checkpoint` (offline) and load its weights.

    A checkpoint saved after reparameterisation is rebuilt in deploy form (with
    ``deploy=True`` when the model accepts it, else by reparameterising a fresh model). The
    config is validated and compared with the tensor shapes in the file *before* the model is
    built, so a wrong or hostile config cannot make it allocate more than the file describes.

    Args:
        path: The ``.safetensors`` file.
        allow_large: Build the model even if it seems larger than the available memory.

    Raises:
        CheckpointError: Missing/invalid config (file and key named), a model name or kwargs that
            do not build, or weights that do not fit (key and both shapes named). Every error of
            this function is a ``CheckpointError`` (``CheckpointNotFoundError`` for a missing file).

    Example:
        >>> # model = largekernel.create_model_from("runs/best.safetensors")
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    config = read_checkpoint_document(path)
    deploy = config.get("form") == "deploy"
    model = build_model_checked(config.get("name"), config.get("kwargs"), source=path,
                                shapes=_file_shapes(path), deploy=deploy, allow_large=allow_large)
    load_checkpoint(model, path)
    if deploy:
        model.largekernel_form = "deploy"
        model.eval()
    return model
