"""timm's ConvNeXt and InceptionNeXt weights from the local caches, never from the network.

largekernel's ConvNeXt and InceptionNeXt use timm's state-dict layout, so a checkpoint timm has
already downloaded loads into them strictly, with no key mapping. This module only *finds* such a
file; it never downloads (whatever ``HF_HUB_OFFLINE`` says, it behaves as if it were set).

Where timm's files live:

* the Hugging Face hub cache (timm >= 0.9): ``<hub>/models--timm--<arch>.<tag>/snapshots/<rev>/``
  holding ``model.safetensors`` or ``pytorch_model.bin``; ``<hub>/models--.../refs/main`` names the
  revision to use. ``<hub>`` is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``;
* torch.hub's legacy cache: ``<torch hub>/checkpoints/<basename of the weights URL>``, e.g.
  ``~/.cache/torch/hub/checkpoints/convnext_atto_d2-01bb0f51.pth`` (``$TORCH_HOME/hub`` when set).

Example:
    >>> import largekernel
    >>> # timm's cached weights and a fresh 10-class head; FileNotFoundError (naming the
    >>> # directories searched) when this machine has none:
    >>> # model = largekernel.from_timm_cache("convnext_atto", num_classes=10)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["TIMM_LAYOUT_PREFIXES", "timm_cache_dirs", "find_timm_checkpoint", "from_timm_cache"]

logger = logging.getLogger(__name__)

#: largekernel model names whose state dicts have timm's layout (checkpoints load unchanged)
TIMM_LAYOUT_PREFIXES = ("convnext_", "inception_next_")
# file names in a hub snapshot, in order of preference (safetensors: no pickle)
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _default_hub_dirs() -> list[Path]:
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]).expanduser() / "hub"]
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return [base / "huggingface" / "hub"]


def _default_torch_dirs() -> list[Path]:
    if os.environ.get("TORCH_HOME"):
        return [Path(os.environ["TORCH_HOME"]).expanduser() / "hub" / "checkpoints"]
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return [base / "torch" / "hub" / "checkpoints"]


def timm_cache_dirs(cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None
                    ) -> tuple[list[Path], list[Path]]:
    """The directories searched: ``(hub caches, torch.hub checkpoint directories)``.

    Args:
        cache_dir: A directory (or several) to search instead of the defaults. Each may be a hub
            cache (holding ``models--timm--*``), a ``HF_HOME`` (holding ``hub/``), a ``TORCH_HOME``
            or torch hub directory, or a directory of ``.pth`` files.

    Example:
        >>> hub, legacy = timm_cache_dirs("/data/cache")
        >>> [str(p) for p in hub]
        ['/data/cache', '/data/cache/hub']
    """
    if cache_dir is None:
        return _default_hub_dirs(), _default_torch_dirs()
    roots = [cache_dir] if isinstance(cache_dir, (str, os.PathLike)) else list(cache_dir)
    hub: list[Path] = []
    legacy: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        hub += [root, root / "hub"]
        legacy += [root, root / "checkpoints", root / "hub" / "checkpoints"]
    return hub, legacy


def _split_name(name: str) -> tuple[str, str | None]:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a model name like 'convnext_atto' or 'convnext_atto.d2_in1k', got {name!r}")
    arch, _, tag = name.partition(".")
    from largekernel.models.registry import is_model

    if not arch.startswith(TIMM_LAYOUT_PREFIXES) or not is_model(arch):
        raise ValueError(f"name must be a largekernel ConvNeXt or InceptionNeXt (timm's layout: "
                         f"{', '.join(p + '*' for p in TIMM_LAYOUT_PREFIXES)}), got {name!r}")
    return arch, tag or None


def _timm_tags(arch: str) -> list[tuple[str, str | None]]:
    """``(tag, weights URL)`` of every pretrained cfg timm knows for ``arch``, default first."""
    try:
        from timm.models import get_arch_pretrained_cfgs
    except ImportError:  # timm only tells us tag names and URLs; the hub layout works without it
        return []
    try:
        cfgs = get_arch_pretrained_cfgs(arch)
    except (KeyError, RuntimeError):
        return []
    return [(full.partition(".")[2], cfg.url or None) for full, cfg in cfgs.items()]


def _snapshot_file(repo: Path) -> Path | None:
    """The weights file of a hub repo directory: ``refs/main``'s snapshot, else the newest one."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    candidates = []
    if ref.is_file():
        candidates.append(snapshots / ref.read_text(encoding="utf-8").strip())
    candidates += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                         reverse=True)
    for snap in candidates:
        for filename in _HUB_FILES:
            if (snap / filename).is_file():  # follows the blob symlink: a dangling link is skipped
                return snap / filename
    return None


def find_timm_checkpoint(name: str, cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None
                         ) -> Path:
    """The cached timm weights file of ``name``, found offline.

    Args:
        name: ``"convnext_atto"`` (timm's default tag first, then any cached one) or a full timm name
            with its tag, ``"convnext_atto.d2_in1k"``.
        cache_dir: Directories to search instead of the default caches (see :func:`timm_cache_dirs`).

    Returns:
        Path of a ``model.safetensors``, ``pytorch_model.bin`` or legacy ``.pth`` file.

    Raises:
        ValueError: ``name`` is not a largekernel model in timm's layout.
        FileNotFoundError: Nothing cached; the message lists every directory searched.

    Example:
        >>> # find_timm_checkpoint("convnext_atto") -> PosixPath('~/.cache/huggingface/hub/models--timm--...')
    """
    arch, tag = _split_name(name)
    hub_dirs, legacy_dirs = timm_cache_dirs(cache_dir)
    known = _timm_tags(arch)
    tags = [tag] if tag else [t for t, _ in known]
    repos = [f"models--timm--{arch}.{t}" for t in tags]
    if not tag:  # any other cached tag of this architecture, and a tag-less repo
        repos.append(f"models--timm--{arch}")
        for hub in hub_dirs:
            if hub.is_dir():
                repos += sorted(p.name for p in hub.glob(f"models--timm--{arch}.*") if p.name not in repos)
    for hub in hub_dirs:
        for repo in repos:
            found = _snapshot_file(hub / repo)
            if found is not None:
                logger.info("timm weights for %s: %s", name, found)
                return found
    files = [Path(url).name for t, url in known if url and (tag is None or t == tag)]
    for folder in legacy_dirs:
        for filename in files:
            if (folder / filename).is_file():
                logger.info("timm weights for %s (torch.hub cache): %s", name, folder / filename)
                return folder / filename
    searched = [f"{d}/{{{', '.join(repos)}}}" for d in hub_dirs] + [
        f"{d}/{{{', '.join(files)}}}" for d in legacy_dirs if files]
    raise FileNotFoundError(
        f"no cached timm weights for {name!r} (largekernel never downloads). Searched: {'; '.join(searched)}. "
        f"Download them once with timm (timm.create_model({name!r}, pretrained=True)), or point HF_HUB_CACHE, "
        f"HF_HOME or TORCH_HOME (or from_timm_cache's cache_dir) at the cache that has them")


def from_timm_cache(name: str, cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                    **kwargs: Any) -> nn.Module:
    """Build largekernel's ``name`` with timm's cached pretrained weights (offline).

    The checkpoint loads strictly (timm's layout is largekernel's); a classifier of another size
    (``num_classes=10``) is left freshly initialised, and ``features_only=True`` drops the head.

    Args:
        name: ``"convnext_atto"`` or ``"convnext_atto.d2_in1k"`` (see :func:`find_timm_checkpoint`).
        cache_dir: Directories to search instead of the default caches.
        **kwargs: Options of :func:`largekernel.create_model` (``num_classes``, ``features_only``, ...).

    Raises:
        FileNotFoundError: Nothing cached (the message lists the directories searched).

    Example:
        >>> # model = from_timm_cache("convnext_atto", num_classes=10)
    """
    from largekernel.models.registry import create_model

    arch, _ = _split_name(name)
    for key in ("pretrained", "pretrained_cfg"):
        if key in kwargs:
            raise TypeError(f"from_timm_cache sets {key} itself; do not pass it")
    path = find_timm_checkpoint(name, cache_dir)
    return create_model(arch, pretrained=True, pretrained_cfg={"file": str(path)}, **kwargs)
