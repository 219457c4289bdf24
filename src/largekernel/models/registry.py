"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Every model family registers its named configurations with :func:`register_model`; an
entry point is a function ``fn(**kwargs) -> nn.Module`` whose name is the model name.
Entry points must not swallow unknown keyword arguments: a misspelt kwarg raises
``TypeError`` naming it, instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from typing import Callable, TypeVar

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint"]

_ModelFn = TypeVar("_ModelFn", bound=Callable[..., nn.Module])
_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}

# Modules whose import registers models. Imported on first registry use so that
# `largekernel.models.registry` itself stays free of import cycles.
_MODEL_MODULES = (
    "largekernel.models.unireplknet",
    "largekernel.models.replknet",
    "largekernel.models.convnext",
    "largekernel.models.inception_next",
    "largekernel.models.lsnet",
    "largekernel.models.sequence",
)
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _MODEL_MODULES:
            importlib.import_module(module)


def register_model(fn: _ModelFn) -> _ModelFn:
    """Register ``fn`` under its ``__name__`` as a model entry point.

    Args:
        fn: A function returning an ``nn.Module``; its keyword arguments are the model's options.

    Returns:
        ``fn`` unchanged, so this can be used as a decorator.

    Raises:
        ValueError: If a different function is already registered under the same name.

    Example:
        >>> from largekernel.models.registry import register_model
        >>> @register_model
        ... def my_tiny_net(num_classes=10, in_chans=3): ...
    """
    name = fn.__name__
    existing = _ENTRYPOINTS.get(name)
    if existing is not None and existing.__qualname__ != fn.__qualname__:
        raise ValueError(f"model name {name!r} is already registered by {existing.__module__}")
    _ENTRYPOINTS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Return the sorted names of registered models matching a shell-style ``pattern``.

    Example:
        >>> import largekernel
        >>> "unireplknet_a" in largekernel.list_models("unireplknet_*")
        True
    """
    _ensure_loaded()
    return sorted(name for name in _ENTRYPOINTS if fnmatch.fnmatchcase(name, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    _ensure_loaded()
    return name in _ENTRYPOINTS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """Return the entry point registered as ``name``.

    Raises:
        ValueError: If ``name`` is unknown; the message suggests close matches.
    """
    _ensure_loaded()
    try:
        return _ENTRYPOINTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ENTRYPOINTS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}.{hint} See largekernel.list_models() for all names."
        ) from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: A name from :func:`list_models`.
        **kwargs: Model options (``num_classes``, ``in_chans``, ``drop_path_rate``,
            ``features_only``, ``out_indices``, family-specific ones, ...). Unknown options raise.

    Returns:
        The model, in training mode.

    Raises:
        ValueError: Unknown model name.
        TypeError: An option the model does not accept.

    Example:
        >>> import largekernel
        >>> model = largekernel.create_model("unireplknet_a", num_classes=10)
    """
    if isinstance(name, str) and name.startswith("local-dir:"):  # config.json + model.safetensors
        from largekernel.deploy.local_dir import load_local_dir

        return load_local_dir(name[len("local-dir:"):], **kwargs)
    fn = model_entrypoint(name)
    signature = inspect.signature(fn)
    accepts_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if not accepts_var_kwargs:
        unknown = sorted(set(kwargs) - set(signature.parameters))
        if unknown:
            raise TypeError(
                f"create_model({name!r}) got unknown keyword argument(s) {unknown}; "
                f"accepted: {sorted(signature.parameters)}"
            )
    model = fn(**kwargs)
    # remembered so that save_checkpoint can write a config that rebuilds the model offline
    model.largekernel_config = {"name": name, "kwargs": dict(kwargs)}
    return model
