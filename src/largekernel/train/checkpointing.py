"""Training checkpoints: atomic writes, a ``latest`` pointer, RNG state capture, resume.

A training checkpoint is a dict of tensors and primitive containers only, written with
``torch.save`` and read back with ``torch.load(weights_only=True)`` (no pickled objects, so
loading a checkpoint cannot execute code). Files live in ``<run>/checkpoints/step_XXXXXXXX.pt``;
``<run>/checkpoints/latest`` names the newest complete one. Every file is written to a temporary
name in the same directory, fsync'ed and then ``os.replace``'d, so a crash at any moment leaves
either the old or the new file, never a truncated one.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from largekernel.errors import CheckpointError, CheckpointNotFoundError
from largekernel.utils.atomic import atomic_write, remove_orphan_temp_files

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "save_training_checkpoint",
    "latest_checkpoint",
    "load_training_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "remove_orphans",
    "CHECKPOINT_DIR",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU + CUDA) as tensors / primitive containers."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_files(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_training_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int,
                             keep: int = 2) -> Path:
    """Write ``state`` as ``<run_dir>/checkpoints/step_<step>.pt``, update ``latest``, prune old.

    Args:
        state: Tensors and primitive containers only.
        run_dir: The run's output directory.
        step: Optimiser step count, used in the file name.
        keep: How many step files to keep (the newest ones; ``latest`` is never pruned).

    Returns:
        The checkpoint path.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    path = directory / f"step_{step:08d}.pt"
    atomic_torch_save(state, path)
    # the pointer is switched only after the checkpoint itself is complete on disk
    atomic_write(directory / _LATEST, lambda f: f.write(path.name.encode()))
    for _, old in _step_files(directory)[:-max(1, keep)]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def remove_orphans(run_dir: str | Path) -> list[Path]:
    """Delete temporary files that killed writers left in ``run_dir`` and its checkpoint directory."""
    run_dir = Path(run_dir)
    return remove_orphan_temp_files(run_dir) + remove_orphan_temp_files(run_dir / CHECKPOINT_DIR)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint named by ``latest`` (or, if that is missing, the highest step file)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    pointer = directory / _LATEST
    if pointer.is_file():
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        # the pointer may only name a step file in this directory (never a path elsewhere)
        candidate = directory / name if _STEP_RE.match(name) else None
        if candidate is not None and candidate.is_file():
            return candidate
        log.warning("checkpoint pointer %s does not name an existing step file; using the newest one", pointer)
    files = _step_files(directory)
    return files[-1][1] if files else None


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True``.

    Raises:
        CheckpointNotFoundError: No such file (also a ``FileNotFoundError``).
        CheckpointError: The file is not a readable training checkpoint (also a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt, truncated or containing disallowed objects
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a largekernel training checkpoint (no 'model'/'config' entries)")
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise CheckpointError(f"{path}: entry 'model' must map parameter names to tensors")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: entry 'config' must be a mapping, got {type(state['config']).__name__}")
    _check_entries(state, path)
    return state


def _check_entries(state: dict, path: Path) -> None:
    """The entries evaluate/predict/info read, checked against the schema (errors name the key)."""
    from largekernel.config_schema import DataInfo, ModelConfig, validate_model
    from largekernel.errors import ConfigError

    for key, schema in (("model_config", ModelConfig), ("data_info", DataInfo)):
        if state.get(key) is None:
            continue
        try:
            validate_model(schema, state[key])
        except ConfigError as err:
            raise CheckpointError(f"{path}: invalid entry {key!r}: {err}") from None
    ema = state.get("ema")
    if ema is not None and not (isinstance(ema, dict) and isinstance(ema.get("model"), dict)
                                and all(isinstance(v, torch.Tensor) for v in ema["model"].values())):
        raise CheckpointError(f"{path}: entry 'ema' must hold a 'model' mapping of tensors")
