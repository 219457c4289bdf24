"""Launch wrappers for the Triton depthwise kernels: checks, 5-D stride views, grids, autotuning.

Imported lazily by :mod:`largekernel.ops.triton` (this module imports Triton).

Autotuning: on CUDA, the first call for a key (kind, rank, shapes, kernel, stride, padding,
dilation, dtype, layout class) times every candidate of :mod:`largekernel.ops.triton.configs` with
``triton.testing.do_bench`` and caches the fastest for the process; ``LARGEKERNEL_TRITON_AUTOTUNE=0``
uses the first (heuristic) candidate instead, as the interpreter always does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import torch
import triton

from largekernel.ops.triton import configs as cfgs
from largekernel.ops.triton.checks import check_conv, interpreter_enabled, output_size, unsupported_output_reason
from largekernel.ops.triton.kernels import dw_forward_kernel, dw_grad_input_kernel, dw_grad_weight_kernel

__all__ = ["depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight", "tune", "clear_tune_cache"]

logger = logging.getLogger(__name__)

_TUNED: dict[tuple, object] = {}
_LOCK = threading.Lock()


def clear_tune_cache() -> None:
    """Forget every autotuned tile configuration."""
    with _LOCK:
        _TUNED.clear()


def _autotune_enabled(device: torch.device) -> bool:
    if device.type != "cuda" or interpreter_enabled():
        return False
    return os.environ.get("LARGEKERNEL_TRITON_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def tune(key: tuple, device: torch.device, cands: Sequence, run: Callable[[object], object]) -> object:
    """The cached best of ``cands`` for ``key`` (timing ``run(cfg)`` on CUDA), else ``cands[0]``."""
    if not _autotune_enabled(device):
        return cands[0]
    with _LOCK:
        hit = _TUNED.get(key)
    if hit is not None:
        return hit
    times = {}
    for cfg in cands:
        try:
            times[cfg] = triton.testing.do_bench(lambda cfg=cfg: run(cfg), warmup=5, rep=20)
        except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory/registers: skip it
            logger.debug("triton autotune: %s failed for %s: %s", cfg, key, exc)
    best = min(times, key=times.get) if times else cands[0]
    logger.info("triton autotune %s -> %s (%.3f ms)", key[:2], best, times.get(best, float("nan")))
    with _LOCK:
        _TUNED[key] = best
    return best


def _view5(t: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes and strides of ``t`` seen as ``(N, C, D, H, W)``."""
    nd = t.dim() - 2
    size, stride = tuple(t.shape), tuple(t.stride())
    pad = 3 - nd
    return size[:2] + (1,) * pad + size[2:], stride[:2] + (0,) * pad + stride[2:]


def _pad3(vals: Sequence[int], fill: int) -> tuple[int, ...]:
    return (fill,) * (3 - len(vals)) + tuple(vals)


def _empty_like_layout(ref: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """An output of ``shape`` in ``ref``'s memory format (channels-last stays channels-last)."""
    fmt = torch.contiguous_format
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
        fmt = torch.channels_last
    elif ref.dim() == 5 and ref.is_contiguous(memory_format=torch.channels_last_3d) and not ref.is_contiguous():
        fmt = torch.channels_last_3d
    return torch.empty(tuple(shape), dtype=ref.dtype, device=ref.device, memory_format=fmt)


def _flat_weight(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1).contiguous()


def _out_spatial(spatial, kernel, stride, padding, dilation, what: str) -> tuple[int, ...]:
    out = output_size(spatial, kernel, stride, padding, dilation)
    if min(out) < 1:
        raise ValueError(
            f"{what}: input of spatial size {tuple(spatial)} is smaller than the dilated kernel "
            f"{tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))} with padding {tuple(padding)}"
        )
    return out


def _check_output(shape: Sequence[int], what: str) -> None:
    reason = unsupported_output_reason(shape)
    if reason:
        raise ValueError(f"{what}: {reason}")


def _check_depthwise(c_in: int, weight: torch.Tensor, what: str) -> int:
    if weight.shape[1] != 1 or weight.shape[0] % c_in:
        raise ValueError(
            f"{what}: weight must be (C*m, 1, *K) for {c_in} input channels (depthwise, groups=C), "
            f"got {tuple(weight.shape)}"
        )
    return weight.shape[0] // c_in


def depthwise_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *,
    config: cfgs.TileConfig | None = None,
) -> torch.Tensor:
    """Depthwise convolution (groups = C) of ``x`` with ``weight`` ``(C*m, 1, *K)``; see the package docs."""
    nd = x.dim() - 2 if isinstance(x, torch.Tensor) else 0
    if nd not in (1, 2, 3):
        raise ValueError(
            f"depthwise_forward: x must be (N, C, *spatial) with 1-3 spatial dims, got {getattr(x, 'shape', x)}"
        )
    kernel, stride, padding, dilation = check_conv(
        {"x": x, "weight": weight}, nd, tuple(getattr(weight, "shape", ())[2:]), stride, padding, dilation
    )
    mult = _check_depthwise(x.shape[1], weight, "depthwise_forward")
    out_sp = _out_spatial(x.shape[2:], kernel, stride, padding, dilation, "depthwise_forward")
    c_out = weight.shape[0]
    _check_output((x.shape[0], c_out, *out_sp), "depthwise_forward")
    y = _empty_like_layout(x, (x.shape[0], c_out, *out_sp))
    if y.numel() == 0:
        return y
    (n, _, d, h, w), sx = _view5(x)
    (_, _, od, oh, ow), sy = _view5(y)
    wf = _flat_weight(weight)
    k3, s3, p3, d3 = _pad3(kernel, 1), _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1)
    layout = cfgs.layout_class(x.stride(), x.shape[1])
    if config is not None:
        cands = [config]
    elif interpreter_enabled():
        cands = [cfgs.interpreter_config(c_out, oh, ow)]
    else:
        cands = cfgs.candidates(layout, nd == 1, c_out, oh, ow)

    def run(cfg: cfgs.TileConfig) -> None:
        grid = (n * od * triton.cdiv(oh, cfg.block_h) * triton.cdiv(ow, cfg.block_w), triton.cdiv(c_out, cfg.block_c))
        dw_forward_kernel[grid](
            x, wf, y, c_out, mult, d, h, w, od, oh, ow, *sx, *sy, *k3, *s3, *p3, *d3,
            BLOCK_C=cfg.block_c, BLOCK_H=cfg.block_h, BLOCK_W=cfg.block_w, num_warps=cfg.num_warps,
        )

    key = ("fwd", nd, tuple(x.shape), c_out, kernel, stride, padding, dilation, x.dtype, layout)
    run(tune(key, x.device, cands, run))
    return y


def depthwise_grad_input(
    grad_out: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *,
    config: cfgs.TileConfig | None = None,
) -> torch.Tensor:
    """Gradient of :func:`depthwise_forward` w.r.t. its input (of shape ``input_shape``)."""
    nd = grad_out.dim() - 2 if isinstance(grad_out, torch.Tensor) else 0
    if nd not in (1, 2, 3):
        raise ValueError(
            f"depthwise_grad_input: grad_out must be (N, C*m, *spatial), got {getattr(grad_out, 'shape', grad_out)}"
        )
    kernel, stride, padding, dilation = check_conv(
        {"grad_out": grad_out, "weight": weight}, nd, tuple(getattr(weight, "shape", ())[2:]), stride, padding, dilation
    )
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != nd + 2 or min(input_shape[1:]) < 1 or input_shape[0] < 0:
        raise ValueError(f"depthwise_grad_input: input_shape must be {nd + 2} positive sizes, got {input_shape}")
    c_in = input_shape[1]
    mult = _check_depthwise(c_in, weight, "depthwise_grad_input")
    want = (input_shape[0], weight.shape[0], *_out_spatial(input_shape[2:], kernel, stride, padding, dilation,
                                                          "depthwise_grad_input"))
    if tuple(grad_out.shape) != want:
        raise ValueError(f"depthwise_grad_input: grad_out must have shape {want} for input {input_shape}, "
                         f"got {tuple(grad_out.shape)}")
    _check_output(input_shape, "depthwise_grad_input")
    gx = _empty_like_layout(grad_out, input_shape)
    if gx.numel() == 0:
        return gx
    (n, _, d, h, w) = (input_shape[0], c_in) + (1,) * (3 - nd) + input_shape[2:]
    (_, _, od, oh, ow), sg = _view5(grad_out)
    _, sx = _view5(gx)
    wf = _flat_weight(weight)
    k3, s3, p3, d3 = _pad3(kernel, 1), _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1)
    qh, qw = triton.cdiv(h, s3[1]), triton.cdiv(w, s3[2])
    layout = cfgs.layout_class(grad_out.stride(), grad_out.shape[1])
    if config is not None:
        cands = [config]
    elif interpreter_enabled():
        cands = [cfgs.interpreter_config(c_in, qh, qw)]
    else:
        cands = cfgs.candidates(layout, nd == 1, c_in, qh, qw)

    def run(cfg: cfgs.TileConfig) -> None:
        tiles = triton.cdiv(qh, cfg.block_h) * triton.cdiv(qw, cfg.block_w)
        grid = (n * d * s3[1] * s3[2] * tiles, triton.cdiv(c_in, cfg.block_c))
        dw_grad_input_kernel[grid](
            grad_out, wf, gx, c_in, mult, d, h, w, od, oh, ow, *sg, *sx, *k3, *s3, *p3, *d3, qh, qw,
            BLOCK_C=cfg.block_c, BLOCK_H=cfg.block_h, BLOCK_W=cfg.block_w, num_warps=cfg.num_warps,
        )

    key = ("gin", nd, input_shape, weight.shape[0], kernel, stride, padding, dilation, grad_out.dtype, layout)
    run(tune(key, grad_out.device, cands, run))
    return gx


def _splits(device: torch.device, programs: int, chunks: int) -> int:
    if device.type == "cuda" and not interpreter_enabled():
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 2  # the interpreter runs programs one after the other: keep it small, but > 1
    return max(1, min(65535, chunks, -(-target // max(programs, 1))))


def depthwise_grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    deterministic: bool = False,
    *,
    config: cfgs.GradWeightConfig | None = None,
) -> torch.Tensor:
    """Gradient of :func:`depthwise_forward` w.r.t. its weight, ``(C*m, 1, *kernel_size)`` in ``x``'s dtype."""
    nd = x.dim() - 2 if isinstance(x, torch.Tensor) else 0
    if nd not in (1, 2, 3):
        raise ValueError(f"depthwise_grad_weight: x must be (N, C, *spatial), got {getattr(x, 'shape', x)}")
    kernel, stride, padding, dilation = check_conv(
        {"x": x, "grad_out": grad_out}, nd, tuple(kernel_size), stride, padding, dilation
    )
    c_in, c_out = x.shape[1], grad_out.shape[1]
    if c_out % c_in:
        raise ValueError(f"depthwise_grad_weight: grad_out has {c_out} channels, not a multiple of x's {c_in}")
    mult = c_out // c_in
    want = (x.shape[0], c_out, *_out_spatial(x.shape[2:], kernel, stride, padding, dilation, "depthwise_grad_weight"))
    if tuple(grad_out.shape) != want:
        raise ValueError(f"depthwise_grad_weight: grad_out must have shape {want}, got {tuple(grad_out.shape)}")
    if x.shape[0] == 0:  # an empty batch contributes nothing
        return torch.zeros((c_out, 1, *kernel), dtype=x.dtype, device=x.device)
    (n, _, d, h, w), sx = _view5(x)
    (_, _, od, oh, ow), sg = _view5(grad_out)
    k3, s3, p3, d3 = _pad3(kernel, 1), _pad3(stride, 1), _pad3(padding, 0), _pad3(dilation, 1)
    kk = k3[0] * k3[1] * k3[2]
    layout = cfgs.layout_class(x.stride(), c_in)
    if config is not None:
        cands = [config]
    elif interpreter_enabled():
        cands = [cfgs.interpreter_grad_weight_config(c_out, k3[2], oh, ow)]
    else:
        cands = cfgs.grad_weight_candidates(layout, c_out, k3[2], ow)

    def run(cfg: cfgs.GradWeightConfig) -> torch.Tensor:
        chunks = n * od * triton.cdiv(oh, cfg.block_h) * triton.cdiv(ow, cfg.block_w)
        tap_groups = k3[0] * k3[1] * triton.cdiv(k3[2], cfg.block_kw)
        c_blocks = triton.cdiv(c_out, cfg.block_c)
        splits = cfg.splits or _splits(x.device, tap_groups * c_blocks, chunks)
        splits = min(splits, chunks)
        per_split = triton.cdiv(chunks, splits)
        splits = triton.cdiv(chunks, per_split)  # no empty splits
        atomic = not deterministic and splits > 1
        if atomic:
            out = torch.zeros((c_out, kk), dtype=torch.float32, device=x.device)
        else:
            out = torch.empty((splits, c_out, kk), dtype=torch.float32, device=x.device)
        dw_grad_weight_kernel[(tap_groups, c_blocks, splits)](
            x, grad_out, out, c_out, mult, d, h, w, od, oh, ow, *sx, *sg, *k3, *s3, *p3, *d3, chunks, per_split,
            ATOMIC=atomic, BLOCK_C=cfg.block_c, BLOCK_KW=cfg.block_kw, BLOCK_H=cfg.block_h, BLOCK_W=cfg.block_w,
            num_warps=cfg.num_warps,
        )
        return out if atomic else out.sum(dim=0)  # fixed-order reduction over splits

    key = ("gw", nd, tuple(x.shape), c_out, kernel, stride, padding, dilation, x.dtype, layout, deterministic)
    gw = run(tune(key, x.device, cands, run))
    return gw.view(c_out, 1, *kernel).to(x.dtype)
