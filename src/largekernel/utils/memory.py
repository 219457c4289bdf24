"""Memory estimates made before anything is allocated, and the check that refuses what cannot fit.

A model is built on PyTorch's ``meta`` device (shapes only, no storage) to count its parameters
and to run one forward pass that records the size of every layer's output. For training, the
activations kept for the backward pass are about the sum of those outputs; for inference about
the two largest live at once. Parameters cost 4x their size in training with AdamW (weights,
gradients, two moments; 3x with SGD) plus one copy for an EMA.

The available memory is read from ``/proc/meminfo`` (``MemAvailable``), capped by a cgroup limit
when one is set, or from ``torch.cuda.mem_get_info`` on a GPU. (psutil is not required.)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from largekernel.errors import InsufficientMemoryError

__all__ = [
    "MemoryEstimate",
    "available_memory",
    "format_bytes",
    "meta_model",
    "plain_convs",
    "tensor_bytes",
    "activation_bytes",
    "estimate_training_memory",
    "estimate_inference_memory",
    "check_memory",
    "check_inference_memory",
]

log = logging.getLogger(__name__)


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``.

    Example:
        >>> format_bytes(3 * 2**30)
        '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can still be allocated on ``device`` (CPU by default); ``None`` if unknown.

    Example:
        >>> (available_memory() or 1) > 0
        True
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # no driver / no device: the caller reports the device problem
            return None
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    # a container's memory limit is smaller than the host's free memory
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found = min(found, max(0, limit - used))
    return found


def meta_model(build: Callable[[], nn.Module]) -> nn.Module | None:
    """``build()`` on the meta device (no storage); ``None`` when the model cannot be built there.

    Errors that are not about the meta device (a bad keyword, say) propagate: they would happen
    on the real device too.

    Example:
        >>> m = meta_model(lambda: torch.nn.Linear(10**6, 10**6))
        >>> m.weight.is_meta
        True
    """
    try:
        with torch.device("meta"):
            return build()
    except NotImplementedError as err:  # e.g. .tolist() of a meta tensor inside a constructor
        log.debug("cannot build the model on the meta device: %s", err)
        return None
    except RuntimeError as err:
        if "meta" in str(err).lower():
            log.debug("cannot build the model on the meta device: %s", err)
            return None
        raise


def tensor_bytes(model: nn.Module, dtype_bytes: int | None = None) -> int:
    """Bytes of ``model``'s parameters and buffers (each at ``dtype_bytes`` if given)."""
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        total += t.numel() * (dtype_bytes or t.element_size())
    return total


def plain_convs(model: nn.Module) -> nn.Module:
    """Swap the engine's convolutions in ``model`` for PyTorch's, in place (for meta-device shape runs).

    Shape inference then depends only on PyTorch, not on the engine's fast paths. Quiet: this is
    an internal step. Returns the model (unchanged if the swap is unavailable).

    Example:
        >>> plain_convs(torch.nn.Linear(2, 2)).in_features
        2
    """
    quiet = logging.getLogger("largekernel.nn.acceleration")
    was_disabled, quiet.disabled = quiet.disabled, True
    try:
        from largekernel.nn.acceleration import to_torch_convs

        result = to_torch_convs(model, inplace=True)
        return result if isinstance(result, nn.Module) else model
    except Exception as err:  # the caller still works on the model as it is
        log.debug("could not swap engine convolutions: %s", err)
        return model
    finally:
        quiet.disabled = was_disabled


def activation_bytes(model: nn.Module, input_shape: Sequence[int], *, training: bool,
                     dtype_bytes: int = 4) -> int | None:
    """Activation memory of one forward pass of a meta ``model`` on ``input_shape`` (with batch).

    The engine's convolutions in ``model`` are swapped (in place) for PyTorch's: pass a throw-away
    meta model. Training: the sum of every leaf module's output (what autograd keeps for backward).
    Inference: twice the largest output (one layer's input and output alive together).
    Returns ``None`` if the forward pass cannot run on the meta device.
    """
    sizes: list[int] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        outs = output if isinstance(output, (tuple, list)) else (output,)
        sizes.append(sum(o.numel() for o in outs if isinstance(o, torch.Tensor)))

    model = plain_convs(model)
    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    was_training = model.training
    model.train(training)
    try:
        with torch.no_grad():
            model(torch.empty(tuple(input_shape), device="meta"))
    except Exception as err:  # a model whose forward needs real data: fall back to a lower bound
        log.debug("meta forward failed (%s); activation estimate unavailable", err)
        return None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not sizes:
        return 0
    return (sum(sizes) if training else 2 * max(sizes)) * dtype_bytes


@dataclass
class MemoryEstimate:
    """An estimate in bytes, by part.

    Example:
        >>> MemoryEstimate(parameters=2**30, activations=2**31).total == 3 * 2**30
        True
    """

    parameters: int = 0  # weights + gradients + optimiser state (+ EMA)
    activations: int = 0
    inputs: int = 0
    exact_activations: bool = True

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.inputs

    def describe(self) -> str:
        approx = "" if self.exact_activations else " (activations: lower bound)"
        return (f"{format_bytes(self.total)} = parameters/optimiser {format_bytes(self.parameters)} + "
                f"activations {format_bytes(self.activations)} + inputs {format_bytes(self.inputs)}{approx}")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def estimate_training_memory(model: nn.Module, input_shape: Sequence[int], *, optimizer: str = "adamw",
                             ema: bool = False, amp: str = "none") -> MemoryEstimate:
    """Estimate the memory of training ``model`` (built on the meta device) on batches of ``input_shape``.

    Example:
        >>> m = meta_model(lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()))
        >>> estimate_training_memory(m, (2, 3, 10, 10)).activations
        8192
    """
    copies = (4 if optimizer == "adamw" else 3) + (1 if ema else 0)
    params = tensor_bytes(model, 4) * copies
    act_bytes = 2 if amp in ("bf16", "fp16") else 4
    acts = activation_bytes(model, input_shape, training=True, dtype_bytes=act_bytes)
    inputs = _numel(input_shape) * 4
    exact = acts is not None
    if acts is None:
        acts = 2 * inputs  # at least the input and its first feature map
    return MemoryEstimate(params, acts, inputs, exact)


def estimate_inference_memory(model: nn.Module, input_shape: Sequence[int]) -> MemoryEstimate:
    """Estimate the memory of running ``model`` (meta) on one batch of ``input_shape``."""
    params = tensor_bytes(model)
    acts = activation_bytes(model, input_shape, training=False)
    inputs = _numel(input_shape) * 4
    exact = acts is not None
    return MemoryEstimate(params, acts if acts is not None else inputs, inputs, exact)


def check_memory(estimate: MemoryEstimate | int, what: str, *, allow_large: bool = False,
                 override: str = "allow_large=true", device: torch.device | str | None = None) -> None:
    """Refuse (``InsufficientMemoryError``) when ``estimate`` exceeds the available memory.

    Args:
        estimate: A :class:`MemoryEstimate` or a byte count.
        what: What would be allocated, for the message (e.g. ``"training unireplknet_a at 224 px"``).
        allow_large: The user insists: only log a warning.
        override: How the user insists, quoted in the message.
        device: Where the memory would be allocated.

    Example:
        >>> check_memory(1024, "a tiny model")  # fits: returns None
    """
    total = estimate.total if isinstance(estimate, MemoryEstimate) else int(estimate)
    detail = estimate.describe() if isinstance(estimate, MemoryEstimate) else format_bytes(total)
    available = available_memory(device)
    if available is None or total <= available:
        log.debug("memory estimate for %s: %s (available %s)", what, detail,
                  format_bytes(available) if available is not None else "unknown")
        return
    message = (f"{what} needs an estimated {detail}, but only {format_bytes(available)} is available; "
               f"reduce the size (image_size, batch_size, model dims) or pass {override} to try anyway")
    if allow_large:
        log.warning("%s", message.split("; reduce")[0] + f" ({override} given: continuing)")
        return
    raise InsufficientMemoryError(message, estimate=total, available=available)


def check_inference_memory(model_config: dict | None, input_shape: Sequence[int], what: str, *,
                           extra_inputs: int = 0, allow_large: bool = False, override: str = "--allow-large",
                           device: torch.device | str | None = None) -> MemoryEstimate:
    """Refuse an inference batch of ``input_shape`` that would not fit (model rebuilt on the meta device).

    Args:
        model_config: ``{"name", "kwargs"}`` of a registered model (``None``: inputs only).
        input_shape: Batch shape, e.g. ``(32, 3, 224, 224)``.
        what: Described in the error message.
        extra_inputs: Bytes of further input data held at the same time (e.g. later batches).
        allow_large: Only warn.
        override: The option that sets ``allow_large``, quoted in the message.
        device: Where it would run.

    Returns:
        The estimate.

    Example:
        >>> est = check_inference_memory({"name": "unireplknet_a", "kwargs": {}}, (1, 3, 32, 32), "x")
        >>> est.total > 0
        True
    """
    skeleton = None
    if model_config and model_config.get("name"):
        from largekernel.models.registry import create_model

        kwargs = dict(model_config.get("kwargs") or {})
        try:
            skeleton = meta_model(lambda: create_model(model_config["name"], **kwargs))
        except Exception as err:  # the real load reports config problems; this is only an estimate
            log.debug("no meta model for the memory estimate: %s", err)
    if skeleton is not None:
        estimate = estimate_inference_memory(skeleton, input_shape)
    else:
        inputs = _numel(input_shape) * 4
        estimate = MemoryEstimate(0, inputs, inputs, False)
    estimate.inputs += int(extra_inputs)
    check_memory(estimate, what, allow_large=allow_large, override=override, device=device)
    return estimate
