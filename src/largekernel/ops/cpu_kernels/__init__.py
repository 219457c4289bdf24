"""Compiled CPU kernels for depthwise convolution (C, built on first use) with a PyTorch fallback.

PyTorch's CPU depthwise convolution is fast in the forward pass (channels-last) but its weight
gradient is 30-60x slower than the forward. This module provides a register-blocked C kernel for
that weight gradient (and a direct forward that wins for long 1-D kernels), for 1-, 2- and 3-D
depthwise convolutions (``groups == C``, one filter per channel) in float32 and float64.

How it works: inputs of any layout/contiguity are packed (in C, in parallel) into a
channel-blocked, zero-padded layout ``(N, C/VL, *S, VL)`` with ``VL`` = one 64-byte vector of
channels, so every kernel is pure vector FMAs (NCHW inputs with whole channel blocks are packed
as transposed VL x VL register tiles). Stride-1 1-D problems on an NCW input skip the packing:
:mod:`largekernel.ops.cpu_kernels.ncw1d` vectorises along the length instead. The library is compiled with the system C
compiler on first use (see :mod:`largekernel.ops.cpu_kernels.build`) and cached. Work is split
into independent task ranges run on a persistent thread pool of ``torch.get_num_threads()``
threads (ctypes releases the GIL; no OpenMP, which would fight torch's own runtime).

If no compiler is available, compilation fails, or ``LARGEKERNEL_DISABLE_NATIVE=1`` is set,
:func:`is_available` returns ``False`` and the public functions compute the same results with
PyTorch (slowly) instead.

Environment variables:
    ``LARGEKERNEL_DISABLE_NATIVE=1``: never use the compiled kernels.
    ``LARGEKERNEL_CACHE_DIR``: where the compiled library is cached (default ``~/.cache/largekernel``).
    ``CC``: the C compiler (default ``cc``, then ``gcc``, ``clang``).
    ``LARGEKERNEL_NATIVE_WORKSPACE_MB``: bound on recycled packing buffers (default 256; 0 disables).

Measured on the 2-core AVX-512 dev machine (fp32, single thread, CPU time of the kernel
alone; a 2048^2 matmul reaches ~190 GF/s per core): grad_weight ~100-190 GF/s for K = 7..511
(2-D 8x64x56x56: K=13 ~130, K=17 ~135-145, K=31 ~170; 1-D 8x256x4096: K=127 ~160, K=511 ~190),
forward 130-220 GF/s. Stride 1 with dilation reuses the same register tiles (phase
decomposition); other strides use a simpler vectorised loop. The forward beats PyTorch clearly for 1-D depthwise (PyTorch's conv1d
has no fast depthwise path, ~2 GF/s) and for 3-D; for 2-D it was at least on par with
PyTorch's channels-last forward at K >= 7 in our (noisy, shared-machine) runs, so the engine
should autotune that choice rather than hard-code it.

Example:
    >>> import torch
    >>> from largekernel.ops import cpu_kernels
    >>> x = torch.randn(2, 40, 30, 30)
    >>> gy = torch.randn(2, 40, 30, 30)
    >>> gw = cpu_kernels.depthwise_grad_weight(x, gy, (13, 13), (1, 1), (6, 6), (1, 1))
    >>> gw.shape
    torch.Size([40, 1, 13, 13])
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch

__all__ = ["is_available", "supports", "depthwise_grad_weight", "depthwise_forward", "disable_reason"]

log = logging.getLogger(__name__)

_ENV_DISABLE = "LARGEKERNEL_DISABLE_NATIVE"
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_LANES = {torch.float32: 16, torch.float64: 8}  # one 64-byte vector

_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_load_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None
_pool_lock = threading.Lock()


_env_warned = False


def _env_disabled() -> bool:
    global _env_warned
    disabled = os.environ.get(_ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no", "off")
    if disabled and not _env_warned:
        _env_warned = True
        log.warning("native CPU kernels disabled by %s, using the PyTorch fallback", _ENV_DISABLE)
    return disabled


def _library() -> ctypes.CDLL | None:
    """The loaded library, building it on first call; ``None`` (after one warning) on failure."""
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    with _load_lock:
        if _lib is None and _load_error is None:
            from . import build

            try:
                _lib = build.load()
            except Exception as err:  # noqa: BLE001 - any failure means "use the fallback"
                _load_error = f"{type(err).__name__}: {err}"
                log.warning("native CPU kernels unavailable, using the PyTorch fallback (%s)", _load_error)
    return _lib


def is_available() -> bool:
    """Whether the compiled kernels can be used (compiles them on the first call, ~1 s).

    Returns ``False`` when ``LARGEKERNEL_DISABLE_NATIVE=1`` is set, or when no C compiler is
    found or compilation failed (a warning is logged once).
    """
    if _env_disabled():
        return False
    return _library() is not None


def disable_reason() -> str | None:
    """Why :func:`is_available` is ``False`` (``None`` if it is ``True``)."""
    if _env_disabled():
        return f"{_ENV_DISABLE} is set"
    return None if _library() is not None else _load_error


def _tuple(value: int | Sequence[int], dims: int, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * dims
    elif isinstance(value, (tuple, list, torch.Size)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = tuple(value)
        if len(out) == 1 and dims > 1:
            out = out * dims
    else:
        raise TypeError(f"{name} must be an int or a tuple of {dims} ints, got {value!r}")
    if len(out) != dims:
        raise ValueError(f"{name} must have {dims} entries for a {dims}-D convolution, got {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return out


def _padding_pairs(padding: int | Sequence, dims: int) -> tuple[tuple[int, int], ...]:
    """Per-dim (lo, hi) zero padding from an int, a tuple of ints, or a tuple of (lo, hi) pairs.

    Plain ints must be >= 0; explicit pairs may be negative (cropping), which asymmetric
    "same" padding and transposed-convolution gradients can produce.
    """
    if isinstance(padding, (tuple, list)) and padding and all(isinstance(p, (tuple, list)) for p in padding):
        if len(padding) != dims:
            raise ValueError(f"padding must have {dims} (lo, hi) pairs for a {dims}-D convolution, got {padding!r}")
        pairs = []
        for pair in padding:
            if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
                raise TypeError(f"padding pairs must be (lo, hi) ints, got {padding!r}")
            pairs.append((int(pair[0]), int(pair[1])))
        return tuple(pairs)
    return tuple((p, p) for p in _tuple(padding, dims, "padding", 0))


def _pad_input(x: torch.Tensor, geo: "_Geometry") -> torch.Tensor:
    """``x`` zero padded (or cropped) by ``geo.pairs`` (for the PyTorch fallbacks)."""
    flat = [v for lo, hi in reversed(geo.pairs) for v in (lo, hi)]
    return torch.nn.functional.pad(x, flat)


def supports(
    x: torch.Tensor,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> bool:
    """Whether the compiled kernels handle this depthwise convolution.

    True when the kernels are available, ``x`` is a float32/float64 CPU tensor with 1-3 spatial
    dims, ``weight_shape == (C, 1, *kernel_size)`` (depthwise, channel multiplier 1), and
    stride/dilation are positive ints (or tuples of them). Never raises.
    """
    try:
        if not isinstance(x, torch.Tensor) or x.device.type != "cpu" or x.dtype not in _SUFFIX:
            return False
        if x.dim() not in (3, 4, 5):
            return False
        dims = x.dim() - 2
        shape = tuple(int(s) for s in weight_shape)
        if len(shape) != dims + 2 or shape[0] != x.shape[1] or shape[1] != 1 or min(shape[2:]) < 1:
            return False
        _tuple(stride, dims, "stride", 1)
        _tuple(dilation, dims, "dilation", 1)
    except (TypeError, ValueError):
        return False
    return is_available()


# ------------------------------------------------------------------------------------------
# thread pool
# ------------------------------------------------------------------------------------------
def _get_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), threads)  # a pool does not survive fork(): rebuild it in the child
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="largekernel-native")
            _pool_key = key
        return _pool


def _num_threads() -> int:
    """Worker count: torch's intra-op thread count, so ``torch.set_num_threads`` governs both."""
    return max(1, torch.get_num_threads())


_MIN_CHUNK_COST = 2_000_000  # ~10-20 us of work: below this a pool hand-off costs more than it saves


def _parallel(fn: Callable[..., None], args: tuple, ntasks: int, cost_per_task: float = float("inf")) -> None:
    """Run ``fn(*args, t0, t1)`` over ``[0, ntasks)``, split into chunks on the thread pool.

    ``cost_per_task`` (rough flops or bytes) keeps chunks big enough to be worth a hand-off;
    small problems run inline on the calling thread.
    """
    if ntasks <= 0:
        return
    threads = _num_threads()
    by_cost = int(ntasks * cost_per_task // _MIN_CHUNK_COST) if cost_per_task != float("inf") else ntasks
    nchunks = max(1, min(threads * 4, ntasks, by_cost))
    if threads == 1 or nchunks == 1:
        fn(*args, 0, ntasks)
        return
    bounds = [ntasks * i // nchunks for i in range(nchunks + 1)]
    pool = _get_pool(threads)
    # the calling thread takes the first chunk itself instead of idling
    futures = [pool.submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(1, nchunks)]
    try:
        fn(*args, bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()


# ------------------------------------------------------------------------------------------
# workspace: packed copies are large (tens of MB) and short-lived; a fresh allocation costs as
# much again in page faults as the packing itself, so freed buffers are kept for reuse (a
# training loop asks for the same sizes every step), bounded by $LARGEKERNEL_NATIVE_WORKSPACE_MB.
# ------------------------------------------------------------------------------------------
_ws_lock = threading.Lock()
_ws_free: OrderedDict[tuple[torch.dtype, int], list[torch.Tensor]] = OrderedDict()
_ws_bytes = 0


def _ws_limit() -> int:
    try:
        return max(0, int(os.environ.get("LARGEKERNEL_NATIVE_WORKSPACE_MB", "256"))) << 20
    except ValueError:
        return 256 << 20


def _ws_take(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous tensor, recycled from the workspace when possible."""
    global _ws_bytes
    key = (dtype, math.prod(shape))
    with _ws_lock:
        free = _ws_free.get(key)
        if free:
            buf = free.pop()
            if not free:
                del _ws_free[key]
            _ws_bytes -= buf.nbytes
            return buf.view(tuple(shape))
    return torch.empty(tuple(shape), dtype=dtype, device="cpu")  # never torch's default device


def _ws_give(*bufs: torch.Tensor) -> None:
    """Return buffers obtained from :func:`_ws_take` (no other references may remain)."""
    global _ws_bytes
    limit = _ws_limit()
    with _ws_lock:
        for buf in bufs:
            if buf.nbytes > limit:
                continue
            key = (buf.dtype, buf.numel())
            _ws_free.setdefault(key, []).append(buf.view(-1))
            _ws_free.move_to_end(key)
            _ws_bytes += buf.nbytes
        while _ws_bytes > limit and _ws_free:
            key, free = next(iter(_ws_free.items()))
            _ws_bytes -= free.pop().nbytes
            if not free:
                del _ws_free[key]


def _i64(values: Sequence[int]) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*[int(v) for v in values])


# ------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------
def _as5d(t: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes and strides of ``t`` viewed as (N, C, D, H, W) with leading singleton spatial dims."""
    missing = 5 - t.dim()
    sizes = (t.shape[0], t.shape[1]) + (1,) * missing + tuple(t.shape[2:])
    strides = (t.stride(0), t.stride(1)) + (0,) * missing + tuple(t.stride()[2:])
    return sizes, strides


def _pack(
    lib: ctypes.CDLL, t: torch.Tensor, out_spatial: tuple[int, int, int], pads: tuple[int, int, int]
) -> torch.Tensor:
    """Pack ``t`` (N, C, *S) to blocked (N, CB, Dn, Hn, Wn, VL) with zeros outside ``t``."""
    lanes = _LANES[t.dtype]
    (n, c, d, h, w), (s_n, s_c, s_d, s_h, s_w) = _as5d(t)
    cb = -(-c // lanes)
    dn, hn, wn = out_spatial
    out = _ws_take((n, cb, dn, hn, wn, lanes), t.dtype)
    params = _i64([n, c, d, h, w, s_n, s_c, s_d, s_h, s_w, cb, dn, hn, wn, *pads])
    fn = getattr(lib, "pack_" + _SUFFIX[t.dtype])
    # cost ~ bytes written; copying is cheap per byte, so weight it down
    rows = n * cb * dn * hn
    _parallel(fn, (t.data_ptr(), out.data_ptr(), params), rows, wn * lanes * t.element_size() / 8)
    return out


def _unpack(lib: ctypes.CDLL, blocked: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Copy blocked ``(N, CB, D, H, W, VL)`` into ``out`` ``(N, C, *S)`` (any strides) in C.

    (torch's permuting copy of small tensors with several intra-op threads was 10x slower than
    this on a loaded 2-core machine.)
    """
    lanes = _LANES[out.dtype]
    (n, c, d, h, w), strides = _as5d(out)
    cb = blocked.shape[1]
    params = _i64([n, c, d, h, w, *strides, cb])
    fn = getattr(lib, "unpack_" + _SUFFIX[out.dtype])
    _parallel(fn, (blocked.data_ptr(), out.data_ptr(), params), n * cb * d * h, w * lanes * out.element_size() / 8)
    return out


# ------------------------------------------------------------------------------------------
# problem geometry
# ------------------------------------------------------------------------------------------
class _Geometry:
    """Shapes of a depthwise problem padded out to 3 spatial dims."""

    def __init__(
        self,
        x: torch.Tensor,
        kernel_size: Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int] | Sequence[tuple[int, int]],
        dilation: int | Sequence[int],
    ) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4, 5):
            raise ValueError(f"x must be (N, C, *S) with 1-3 spatial dims, got shape {tuple(x.shape)}")
        dims = x.dim() - 2
        self.dims = dims
        self.kernel = _tuple(kernel_size, dims, "kernel_size", 1)
        self.stride = _tuple(stride, dims, "stride", 1)
        self.pairs = _padding_pairs(padding, dims)
        # symmetric view (what F.conv* takes) when possible, else the (lo, hi) pairs
        symmetric = all(lo == hi and lo >= 0 for lo, hi in self.pairs)
        self.padding = tuple(lo for lo, _ in self.pairs) if symmetric else self.pairs
        self.dilation = _tuple(dilation, dims, "dilation", 1)
        self.n, self.c = int(x.shape[0]), int(x.shape[1])
        self.spatial = tuple(int(s) for s in x.shape[2:])
        out = []
        for size, k, s, (lo, hi), d in zip(self.spatial, self.kernel, self.stride, self.pairs, self.dilation):
            o = (size + lo + hi - d * (k - 1) - 1) // s + 1
            if o < 1:
                raise ValueError(
                    f"input spatial size {self.spatial} with padding {self.padding} is smaller than the "
                    f"dilated kernel {self.kernel} (dilation {self.dilation}): output size would be {o}"
                )
            out.append(o)
        self.out_spatial = tuple(out)

        def pad3(v: tuple[int, ...], fill: int) -> tuple[int, ...]:
            return (fill,) * (3 - dims) + v

        self.k3 = pad3(self.kernel, 1)
        self.s3 = pad3(self.stride, 1)
        self.p3 = pad3(tuple(lo for lo, _ in self.pairs), 0)
        self.d3 = pad3(self.dilation, 1)
        self.o3 = pad3(self.out_spatial, 1)
        # input extent actually read: the last output's window end (<= size + lo + hi)
        self.in3 = tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(self.o3, self.s3, self.k3, self.d3))


def _fallback_grad_weight(x: torch.Tensor, grad_output: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    weight = torch.empty((geo.c, 1, *geo.kernel), dtype=x.dtype, device=x.device)
    padding = list(geo.padding)
    if isinstance(padding[0], tuple):  # asymmetric: pad explicitly
        x, padding = _pad_input(x, geo), [0] * geo.dims
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_output.to(x.dtype),
        x,
        weight,
        None,
        list(geo.stride),
        padding,
        list(geo.dilation),
        False,
        [0] * geo.dims,
        geo.c,
        [False, True, False],
    )
    return grad_weight


def _gw_partition(cb: int, geo: _Geometry) -> tuple[tuple[int, int, int, int], int]:
    """Split grad_weight into independent tasks: ((NG, GS, NHG, HS), number of tasks).

    A task is (channel block, kd, group of kernel rows, group of taps). Whole kernels per task
    stream the data least often, so groups are only split until every thread has ~4 tasks.
    """
    kd, kh, kw = geo.k3
    need = 4 * _num_threads()
    base = cb * kd
    row_groups = 1 if base >= need else min(kh, -(-need // base))
    row_size = -(-kh // row_groups)
    row_groups = -(-kh // row_size)
    tap_groups = 1
    if base * row_groups < need:
        tap_groups = min(-(-kw // 8), -(-need // (base * row_groups)))
    tap_size = -(-kw // tap_groups)
    if tap_groups > 1:
        tap_size = -(-tap_size // 8) * 8  # keep whole 8-tap register tiles
        tap_groups = -(-kw // tap_size)
    return (tap_groups, tap_size, row_groups, row_size), base * row_groups * tap_groups


def depthwise_grad_weight(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    kernel_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | Sequence[tuple[int, int]] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Weight gradient of a depthwise convolution (``groups == C``, one filter per channel).

    Exactly ``torch.autograd.grad`` of ``F.conv{1,2,3}d(x, w, None, stride, padding, dilation,
    groups=C)`` with respect to ``w`` (up to floating-point summation order).

    Args:
        x: input ``(N, C, *S)``, 1-3 spatial dims, any memory layout / strides.
        grad_output: ``(N, C, *S_out)`` gradient of the convolution output (any layout).
        kernel_size: ``K`` per spatial dim.
        stride: int or tuple per spatial dim (>= 1).
        padding: symmetric zero padding, int or tuple per spatial dim (>= 0); or a tuple of
            (lo, hi) pairs per spatial dim for asymmetric padding (negative values crop).
        dilation: int or tuple per spatial dim (>= 1).

    Returns:
        ``(C, 1, *kernel_size)`` tensor in ``x.dtype``, contiguous.

    Raises:
        TypeError / ValueError: bad argument types, shapes or sizes.

    Example:
        >>> x, gy = torch.randn(1, 3, 9), torch.randn(1, 3, 9)
        >>> depthwise_grad_weight(x, gy, (5,), (1,), (2,), (1,)).shape
        torch.Size([3, 1, 5])
    """
    geo = _Geometry(x, kernel_size, stride, padding, dilation)
    if not isinstance(grad_output, torch.Tensor):
        raise TypeError(f"grad_output must be a torch.Tensor, got {type(grad_output).__name__}")
    expected = (geo.n, geo.c, *geo.out_spatial)
    if tuple(grad_output.shape) != expected:
        raise ValueError(f"grad_output must have shape {expected} for this convolution, got {tuple(grad_output.shape)}")
    if grad_output.device != x.device:
        raise ValueError(f"x and grad_output must be on the same device, got {x.device} and {grad_output.device}")
    weight_shape = (geo.c, 1, *geo.kernel)
    if not supports(x, weight_shape, geo.stride, geo.dilation):
        return _fallback_grad_weight(x, grad_output, geo)
    if geo.n == 0 or geo.c == 0:
        return torch.zeros(weight_shape, dtype=x.dtype, device="cpu")
    lib = _library()
    assert lib is not None  # supports() checked it
    grad_output = grad_output.to(x.dtype)
    from largekernel.ops.cpu_kernels import ncw1d  # noqa: PLC0415 - imports this package

    if ncw1d.applies(x, geo, grad_output):
        return ncw1d.grad_weight(x, grad_output, geo)
    lanes = _LANES[x.dtype]
    xp = _pack(lib, x, geo.in3, geo.p3)
    owned = [xp]
    if grad_output.stride(1) == 1 and geo.c % lanes == 0:
        # channels are already innermost (channels-last): read the gradient in place
        gp = grad_output
        g_n, g_c, g_d, g_h, g_w = _as5d(grad_output)[1]
        g_strides: tuple[int, ...] = (g_n, g_c * lanes, g_d, g_h, g_w)
    else:
        gp = _pack(lib, grad_output, geo.o3, (0, 0, 0))
        owned.append(gp)
        g_strides = tuple(gp.stride()[:5])
    try:
        cb = xp.shape[1]
        kd, kh, kw = geo.k3
        gw = torch.empty((cb, kd, kh, kw, lanes), dtype=x.dtype, device="cpu")
        params, ntasks = _gw_partition(cb, geo)
        params = _i64([*xp.shape[:5], *geo.o3, *geo.k3, *geo.s3, *geo.d3, *params, *g_strides])
        fn = getattr(lib, "gw_tasks_" + _SUFFIX[x.dtype])
        flops = 2.0 * geo.n * cb * lanes * math.prod(geo.o3) * math.prod(geo.k3)
        _parallel(fn, (xp.data_ptr(), gp.data_ptr(), gw.data_ptr(), params), ntasks, flops / ntasks)
    finally:
        del gp
        _ws_give(*owned)
        del owned, xp
    out = torch.empty((geo.c, 1, *geo.kernel), dtype=x.dtype, device="cpu")
    # gw is (CB, KD, KH, KW, VL) = blocked with N = 1; out viewed as (1, C, *K)
    return _unpack(lib, gw.unsqueeze(0), out.view(1, geo.c, *geo.kernel)).view(geo.c, 1, *geo.kernel)


def depthwise_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | Sequence[tuple[int, int]] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Depthwise convolution forward, ``F.conv{1,2,3}d(x, weight, None, stride, padding, dilation, groups=C)``.

    A direct register-tiled kernel (see the module docstring for where it beats PyTorch: always
    for 1-D, usually for 3-D; for 2-D autotune against PyTorch's channels-last forward). The
    result has ``x``'s memory format (channels-last in, channels-last out). ``weight`` is
    detached: this is not differentiable by itself (the engine's autograd function is).

    Args:
        x: ``(N, C, *S)`` input with 1-3 spatial dims, any layout.
        weight: ``(C, 1, *K)`` depthwise filters.
        stride, dilation: as for ``F.conv*``.
        padding: as for ``F.conv*`` (explicit ints), or (lo, hi) pairs per spatial dim.

    Returns:
        ``(N, C, *S_out)`` tensor in ``x.dtype``.

    Example:
        >>> x, w = torch.randn(2, 8, 100), torch.randn(8, 1, 31)
        >>> depthwise_forward(x, w, 1, 15, 1).shape
        torch.Size([2, 8, 100])
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if weight.dim() != x.dim() or weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
        raise ValueError(
            f"weight must be (C, 1, *K) with C = {x.shape[1] if x.dim() > 1 else '?'} and "
            f"{x.dim() - 2} kernel dims for x of shape {tuple(x.shape)}, got {tuple(weight.shape)}"
        )
    geo = _Geometry(x, tuple(weight.shape[2:]), stride, padding, dilation)
    if not supports(x, tuple(weight.shape), geo.stride, geo.dilation) or geo.n == 0 or geo.c == 0:
        conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[geo.dims]
        padding = geo.padding
        if isinstance(padding[0], tuple):  # asymmetric: pad explicitly
            x, padding = _pad_input(x, geo), 0
        return conv(x, weight.to(x.dtype), None, geo.stride, padding, geo.dilation, geo.c)
    lib = _library()
    assert lib is not None
    from largekernel.ops.cpu_kernels import ncw1d  # noqa: PLC0415 - imports this package

    if ncw1d.applies(x, geo):
        return ncw1d.forward(x, weight, geo)
    lanes = _LANES[x.dtype]
    xp = _pack(lib, x, geo.in3, geo.p3)
    wp = _pack(lib, weight.detach().to(x.dtype).reshape(1, geo.c, *geo.k3), geo.k3, (0, 0, 0))
    cb = xp.shape[1]
    yb = _ws_take((geo.n, cb, *geo.o3, lanes), x.dtype)
    try:
        params = _i64([*xp.shape[:5], *geo.o3, *geo.k3, *geo.s3, *geo.d3, 1, geo.k3[2], 1, geo.k3[1]])
        fn = getattr(lib, "fwd_tasks_" + _SUFFIX[x.dtype])
        rows = geo.n * cb * geo.o3[0] * geo.o3[1]
        cost = 2.0 * geo.o3[2] * lanes * math.prod(geo.k3)
        _parallel(fn, (xp.data_ptr(), wp.data_ptr(), yb.data_ptr(), params), rows, cost)
    finally:
        _ws_give(xp, wp)
        del xp, wp
    # back to (N, C, *S_out), in x's memory format
    fmt = torch.contiguous_format
    if geo.dims == 2 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        fmt = torch.channels_last
    elif geo.dims == 3 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        fmt = torch.channels_last_3d
    out = torch.empty((geo.n, geo.c, *geo.out_spatial), dtype=x.dtype, device="cpu", memory_format=fmt)
    _unpack(lib, yb, out)
    _ws_give(yb)
    return out
