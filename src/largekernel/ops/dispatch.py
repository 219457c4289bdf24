"""Choosing an implementation: heuristics from measurements, forcing, autotuning.

Measured on the project's 2-core AVX-512 CPU (torch 2.13, float32, shared and heavily loaded while
measuring, so only orderings are trusted; the autotuner settles close calls per shape):

* depthwise 2-D forward (B=8, C=64, 56², idle machine): oneDNN NCHW falls off a cliff above K=13
  (131 ms at K=17) but is the fastest of all for K <= 13 (K=13: 2.8 ms vs channels-last 6.9 ms vs
  the compiled kernel 4.4 ms); channels-last oneDNN is near peak from K=15 (K=17 3.5 ms, K=31
  10 ms). So: NCHW input stays NCHW for K <= 13; channels-last for K >= 15 (converting an NCHW
  input costs ~1 ms); a channels-last input at K=11..13 goes to the compiled kernel.
* depthwise weight gradient: oneDNN's is slow in both layouts (K=17 ~200 ms, K=31 ~630 ms); the
  batch-summed FFT correlation costs ~25-50 ms nearly independently of K and wins from K≈11;
  the compiled kernel beats both from K=5 (K=3: oneDNN channels-last is as fast).
* grad_input: a forward conv of the gradient with the flipped kernel, so it costs a forward.
* 1-D depthwise (B=8, C=256, L=4096): NCL oneDNN 150-2300 ms; as a channels-last 2-D conv with a
  (1, K) kernel 30-60 ms; FFT ~60 ms (K-independent), crossing over near K=512; the compiled
  kernel is fastest from K≈5 up to K≈2000, where FFT takes over.
* 3-D depthwise (B=2, C=32, 32³): channels-last oneDNN wins for K ≤ 7, the compiled kernel from
  K≈9; FFT does not pay off at this size (K=13: 250 ms vs 195 ms compiled).
* dense (groups=1) convolutions stay on PyTorch except for very large kernels, where FFT's cost
  (a complex channel-mixing product per frequency) is far below the direct K^d work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import torch

from largekernel.ops import native, triton_dispatch
from largekernel.ops.validation import ConvArgs

__all__ = [
    "Plan",
    "FORWARD_IMPLS",
    "GRAD_INPUT_IMPLS",
    "GRAD_WEIGHT_IMPLS",
    "choose_plan",
    "force_impl",
    "set_autotune",
    "get_autotune",
    "deterministic",
    "clear_autotune_cache",
    "forced_impl",
    "state_token",
    "engine_may_differ",
]

logger = logging.getLogger(__name__)

FORWARD_IMPLS = ("native", "native_cl", "fft", "kernels", "triton")
GRAD_INPUT_IMPLS = ("native", "native_cl", "fft", "kernels", "aten", "autograd", "triton")
GRAD_WEIGHT_IMPLS = ("kernels", "fft", "aten", "aten_cl", "autograd", "triton")

# Thresholds on the largest effective (dilated) kernel extent K, from the measurements above.
DW_CUSTOM_MIN_K = {1: 4, 2: 4, 3: 4}  # depthwise below this: PyTorch autograd (channels-last) is fine
# strided depthwise below this: PyTorch autograd too (the compiled weight gradient's strided loop is
# the simple one; timm's mobilenetv3 5x5 stride-2 convs trained 2.4x slower through it)
DW_STRIDED_CUSTOM_MIN_K = {1: 9, 2: 9, 3: 9}
# oneDNN NC* forward for NC*-contiguous input in this K window (2-D: channels-last has a slow spot at
# K=9..13 where NCHW is still fine; outside it channels-last is near peak, NCHW erratic under load)
# (idle-machine sweep, B=8, C=64, 56²: K=13 NCHW 2.8 ms vs channels-last 6.9 ms vs compiled 4.4 ms;
# for K <= 9 NCHW and channels-last are within ~0.5 ms, less than converting an NCHW input costs)
DW_NCHW_K_RANGE = {1: (1, 13), 2: (1, 13), 3: (0, 0)}
# compiled forward in this K window, checked after the NC* window above (2-D: channels-last input at
# K=11..13, where oneDNN channels-last is weak; 3-D: oneDNN channels-last is back near peak by K=21)
DW_KERNELS_FWD_K_RANGE = {1: (5, 10**9), 2: (11, 13), 3: (9, 17)}
# the compiled 2-D forward pays a packing pass: below this many input elements oneDNN wins (a
# deployed UniRepLKNet-A at batch 1: 13x13 on 160x14x14 / 320x7x7 maps ran 16 % slower than PyTorch)
DW_KERNELS_FWD_2D_MIN_NUMEL = 1 << 18
DW_FFT_FWD_MIN_K = {1: 2048, 2: 10**9, 3: 10**9}  # FFT forward (with compiled kernels available)
DW_FFT_FWD_MIN_K_NO_KERNELS = {1: 512, 2: 10**9, 3: 13}  # FFT forward without compiled kernels
DW_KERNELS_GW_MIN_K = {1: 4, 2: 4, 3: 4}  # compiled weight gradient from here
DW_FFT_GW_MIN_K = {1: 64, 2: 11, 3: 9}  # FFT weight gradient from here (no compiled kernels)
DENSE_FFT_MIN_K = {1: 64, 2: 21, 3: 11}  # dense / many channels per group: FFT from this K


def engine_may_differ(nd: int, groups: int, in_per_group: int, extent: int) -> bool:
    """Whether some input of this convolution could be planned other than as PyTorch's own call.

    Below these thresholds every plan is PyTorch's (``native``/``autograd``), so wrapping such a
    convolution in the engine, or in a custom operator, would only add dispatch overhead.

    Args:
        nd: Spatial rank (1, 2 or 3).
        groups: ``groups`` of the convolution.
        in_per_group: Input channels per group.
        extent: Largest dilated kernel extent, ``dilation * (kernel - 1) + 1``.

    Example:
        >>> engine_may_differ(2, groups=8, in_per_group=1, extent=13), engine_may_differ(2, 1, 8, 3)
        (True, False)
    """
    if extent >= DENSE_FFT_MIN_K[nd]:
        return True  # very large kernels: FFT, any grouping
    return groups > 1 and in_per_group <= 4 and extent >= DW_CUSTOM_MIN_K[nd]


@dataclass(frozen=True)
class Plan:
    """The implementations chosen for one convolution.

    Attributes:
        forward: one of ``FORWARD_IMPLS``.
        grad_input: forward implementation reused for the flipped-kernel conv, ``"aten"`` (PyTorch's
            convolution_backward) or ``"autograd"`` (PyTorch autograd through the forward).
        grad_weight: ``"kernels"``, ``"fft"``, ``"aten"``, ``"aten_cl"`` or ``"autograd"``.
        reason: why these were chosen.
        compute_dtype: dtype the computation runs in.
        autotuned: whether the choice came from timing candidates.
    """

    forward: str
    grad_input: str
    grad_weight: str
    reason: str
    compute_dtype: torch.dtype = torch.float32
    autotuned: bool = False
    key: tuple = field(default=(), compare=False, repr=False)

    @property
    def uses_autograd(self) -> bool:
        """True when PyTorch's autograd differentiates the forward (no custom backward)."""
        return self.grad_input == "autograd"

    def __str__(self) -> str:
        lines = [
            f"forward:     {self.forward}",
            f"grad_input:  {self.grad_input}",
            f"grad_weight: {self.grad_weight}",
            f"compute in:  {str(self.compute_dtype).replace('torch.', '')}"
            + (" (autotuned)" if self.autotuned else ""),
            f"reason:      {self.reason}",
        ]
        return "\n".join(lines)


class _State(threading.local):
    def __init__(self) -> None:
        self.forced: dict[str, str] = {}
        self.deterministic: bool = False


_STATE = _State()
_AUTOTUNE = [os.environ.get("LARGEKERNEL_AUTOTUNE", "0").lower() in ("1", "true", "yes", "on")]
_TUNE_CACHE: dict[tuple, Plan] = {}
_TUNE_LOCK = threading.Lock()


@contextlib.contextmanager
def force_impl(forward: str | None = None, grad_input: str | None = None, grad_weight: str | None = None):
    """Force implementations inside the block (for tests and benchmarks).

    A forced implementation that cannot serve a call (the compiled kernels are unavailable, or the
    convolution is not depthwise) raises :class:`~largekernel.ops.ForcedImplementationError`
    instead of silently falling back, so a test forcing a path really exercises it.

    Args:
        forward: one of ``FORWARD_IMPLS``.
        grad_input: one of ``GRAD_INPUT_IMPLS``.
        grad_weight: one of ``GRAD_WEIGHT_IMPLS``.

    Example:
        >>> with force_impl(forward="fft", grad_weight="fft"):
        ...     y = largekernel.ops.conv(x, w, padding="same", groups=x.shape[1])  # doctest: +SKIP
    """
    for name, value, allowed in (
        ("forward", forward, FORWARD_IMPLS),
        ("grad_input", grad_input, GRAD_INPUT_IMPLS),
        ("grad_weight", grad_weight, GRAD_WEIGHT_IMPLS),
    ):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if (grad_input == "autograd") != (grad_weight == "autograd") and None not in (grad_input, grad_weight):
        raise ValueError("grad_input and grad_weight must both be 'autograd' or neither")
    old = dict(_STATE.forced)
    new = {k: v for k, v in (("forward", forward), ("grad_input", grad_input), ("grad_weight", grad_weight)) if v}
    _STATE.forced = {**old, **new}
    try:
        yield
    finally:
        _STATE.forced = old


def forced_impl(stage: str) -> str | None:
    """The implementation forced for ``stage`` (``"forward"``, ``"grad_input"``, ``"grad_weight"``)
    by an enclosing :func:`force_impl` on this thread, or ``None``."""
    return _STATE.forced.get(stage)


def state_token() -> tuple:
    """A cheap value that changes whenever forcing, autotuning or deterministic mode changes; callers
    that cache dispatch decisions include it in their key."""
    return (tuple(sorted(_STATE.forced.items())) if _STATE.forced else (), _STATE.deterministic, _AUTOTUNE[0])


def set_autotune(enabled: bool) -> None:
    """Enable/disable autotuning (also set by env ``LARGEKERNEL_AUTOTUNE=1``).

    When enabled, the first call for each (shapes, hyper-parameters, dtype, device, grad) key times
    the candidate implementations once and caches the fastest; deterministic mode disables it.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _AUTOTUNE[0] = enabled


def get_autotune() -> bool:
    """Whether autotuning is enabled."""
    return _AUTOTUNE[0]


def clear_autotune_cache() -> None:
    """Forget all autotuned choices."""
    with _TUNE_LOCK:
        _TUNE_CACHE.clear()


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Context manager: use the fixed heuristic table only (no autotuning) inside the block.

    All engine implementations are deterministic run-to-run on CPU; this makes the *choice* of
    implementation reproducible too.
    """
    old = _STATE.deterministic
    _STATE.deterministic = bool(enabled)
    try:
        yield
    finally:
        _STATE.deterministic = old


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        return torch.float32  # oneDNN half paths are missing or slow on CPU; compute in fp32
    return dtype


def heuristic_plan(x: torch.Tensor, weight_shape: tuple[int, ...], args: ConvArgs, requires_grad: bool,
                   *, channels_last: bool | None = None) -> Plan:
    """The fixed dispatch table (no timing).

    ``channels_last`` overrides the input's layout as read from ``x`` (for :func:`explain`, whose
    stand-in tensor has no real layout).
    """
    nd = args.nd
    k = args.max_kernel
    cdt = _compute_dtype(x.dtype, x.device)
    torch_plan = dict(grad_input="autograd", grad_weight="autograd", compute_dtype=x.dtype)

    if x.numel() == 0:
        return Plan("native", reason="empty input: PyTorch", **torch_plan)
    if x.device.type != "cpu":
        # CUDA & co: depthwise kernels in Triton's K window run on the Triton kernels when Triton
        # imports (never imported for CPU tensors); else cuDNN, and FFT only for very long kernels.
        triton_note = ""
        if args.groups == args.in_channels and args.in_per_group == 1 and triton_dispatch.triton_preferred(args):
            why_not = triton_dispatch.triton_reason(x, weight_shape, args)
            if why_not is None:
                g = "triton" if requires_grad else "none"
                return Plan("triton", g, g, f"{x.device.type}: Triton depthwise kernels (kernel extent {k})", x.dtype)
            triton_note = f" (Triton not used: {why_not})"
        if k >= DENSE_FFT_MIN_K[nd] * 4:
            return Plan("fft", "fft", "fft", f"{x.device.type}: kernel extent {k} is very large -> FFT", cdt)
        return Plan("native", reason=f"{x.device.type}: vendor library{triton_note}", **torch_plan)

    grouped = args.groups > 1 and args.in_per_group <= 4
    if not grouped:
        if k >= DENSE_FFT_MIN_K[nd]:
            return Plan(
                "fft", "fft", "fft",
                f"dense {nd}-D conv with kernel extent {k} >= {DENSE_FFT_MIN_K[nd]}: FFT is cheaper than direct",
                cdt,
            )
        if cdt != x.dtype:
            return Plan("native", "native", "aten", f"{x.dtype} on CPU: computed in float32 by PyTorch", cdt)
        return Plan("native", reason=f"dense {nd}-D conv with small kernel ({k}): PyTorch/oneDNN", **torch_plan)

    # depthwise (1 input channel per group, any channel multiplier) or few channels per group
    why = [f"depthwise-like {nd}-D conv (groups={args.groups}, {args.in_per_group} in-ch/group, "
           f"{args.out_per_group} out-ch/group), kernel extent {k}"]
    # the compiled kernels see the compute dtype (half types are computed in float32)
    xk = x if cdt == x.dtype else torch.zeros((), dtype=cdt, device=x.device).expand(tuple(x.shape))
    kern_fwd = native.kernels_forward_ok(xk, weight_shape, args)
    kern_gw = native.kernels_grad_weight_ok(xk, weight_shape, args)
    is_cl = _is_channels_last(x) if channels_last is None else channels_last
    nchw_window = not is_cl and DW_NCHW_K_RANGE[nd][0] <= k <= DW_NCHW_K_RANGE[nd][1]
    kernels_window = kern_fwd and DW_KERNELS_FWD_K_RANGE[nd][0] <= k <= DW_KERNELS_FWD_K_RANGE[nd][1]
    if nd == 2 and _numel(x) < DW_KERNELS_FWD_2D_MIN_NUMEL:
        kernels_window = False  # small 2-D maps: packing costs more than oneDNN's own conv
    if kern_fwd and k >= DW_FFT_FWD_MIN_K[nd] or not kern_fwd and k >= DW_FFT_FWD_MIN_K_NO_KERNELS[nd]:
        fwd = "fft"
        why.append("forward: FFT (cost independent of K)")
    elif nchw_window and (nd == 2 or not kernels_window):
        # 2-D: inside its window oneDNN's NCHW forward beats the compiled kernel too
        fwd = "native"
        why.append("forward: oneDNN in the input's NC* layout")
    elif kernels_window:
        fwd = "kernels"
        why.append("forward: compiled depthwise kernel")
    else:
        fwd = "native_cl"
        why.append("forward: oneDNN channels-last" + (" (input already channels-last)" if is_cl else ""))
    if not requires_grad:
        return Plan(fwd, "none", "none", "; ".join(why) + "; no grad needed", cdt)
    cl_gw_safe = native.channels_last_grad_weight_safe(x, _ShapeOnly(weight_shape), args.stride, args.sym_padding, args.groups)
    strided_small = any(st > 1 for st in args.stride) and k < DW_STRIDED_CUSTOM_MIN_K[nd]
    if (k < DW_CUSTOM_MIN_K[nd] or strided_small) and cdt == x.dtype and fwd in ("native", "native_cl"):
        if nd > 1 and cl_gw_safe:
            fwd = "native_cl"
        elif nd > 1:
            fwd = "native"  # PyTorch's channels-last weight gradient is broken here: stay NC*
        why.append(("strided small kernel" if strided_small and k >= DW_CUSTOM_MIN_K[nd] else "tiny kernel")
                   + ": PyTorch autograd" + (" through the channels-last conv" if nd > 1 else ""))
        return Plan(fwd, reason="; ".join(why), **torch_plan)
    gi = fwd
    why.append("grad_input: forward conv with the flipped kernel")
    if kern_gw and k >= DW_KERNELS_GW_MIN_K[nd]:
        gw = "kernels"
        why.append("grad_weight: compiled kernel")
    elif k >= DW_FFT_GW_MIN_K[nd]:
        gw = "fft"
        why.append(f"grad_weight: FFT correlation (K >= {DW_FFT_GW_MIN_K[nd]})")
    elif cl_gw_safe:
        gw = "aten_cl"
        why.append("grad_weight: PyTorch channels-last backward")
    else:
        gw = "aten"
        why.append("grad_weight: PyTorch NC* backward (its channels-last one is broken for this case)")
    return Plan(fwd, gi, gw, "; ".join(why), cdt)


def _numel(x) -> int:
    n = 1
    for d in x.shape:
        n *= int(d)
    return n


class _ShapeOnly:
    """Weight stand-in for the safety checks, which only read ``dim()`` and ``shape``."""

    def __init__(self, shape) -> None:
        self.shape = tuple(shape)

    def dim(self) -> int:
        return len(self.shape)


def _is_channels_last(x) -> bool:
    try:
        if x.dim() == 4:
            return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if x.dim() == 5:
            return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    except (AttributeError, RuntimeError):
        pass
    return False


def _apply_forced(plan: Plan, x: torch.Tensor) -> Plan:
    forced = _STATE.forced
    fwd = forced.get("forward", plan.forward)
    gi = forced.get("grad_input", plan.grad_input)
    gw = forced.get("grad_weight", plan.grad_weight)
    if gi == "none":
        gi = fwd
    if gw == "none":
        gw = "aten"
    if (gi == "autograd") != (gw == "autograd"):
        # a partially forced plan cannot mix autograd with a custom backward
        if gi == "autograd":
            gi = fwd
        else:
            gw = "aten"
    cdt = x.dtype if gi == "autograd" and fwd in ("native", "native_cl") else _compute_dtype(x.dtype, x.device)
    return Plan(fwd, gi, gw, f"forced by force_impl({forced})", cdt, key=plan.key)


def _time(fn, repeats: int = 2) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _autotune(x: torch.Tensor, weight: torch.Tensor, args: ConvArgs, base: Plan, requires_grad: bool) -> Plan:
    from largekernel.ops.autograd import compute_grad_weight, run_forward  # noqa: PLC0415

    cdt = base.compute_dtype
    xs = torch.randn_like(x, dtype=cdt)  # keeps the caller's memory layout
    ws = torch.randn(weight.shape, dtype=cdt, device=x.device)
    fwd_cands = ["native_cl", "fft"]
    if not (args.nd == 2 and args.max_kernel > 13 and args.groups > 1):
        fwd_cands.insert(0, "native")  # oneDNN's NCHW depthwise cliff: seconds per call, never chosen
    if native.kernels_forward_ok(xs, tuple(weight.shape), args):
        fwd_cands.append("kernels")
    use_triton = xs.device.type == "cuda" and triton_dispatch.triton_plan_ok(xs, tuple(weight.shape), args)
    if use_triton:
        fwd_cands.append("triton")
    times = {}
    with torch.no_grad():
        for impl in fwd_cands:
            try:
                times[impl] = _time(
                    lambda impl=impl: run_forward(
                        impl, xs, ws, None, args.stride, args.padding, args.dilation, args.groups
                    )
                )
            except Exception as exc:  # noqa: BLE001 - a failing candidate is simply not chosen
                logger.debug("autotune: forward %s failed: %s", impl, exc)
        fwd = min(times, key=times.get)
        reason = "autotuned forward " + ", ".join(f"{k}={v * 1e3:.2f}ms" for k, v in times.items())
        if not requires_grad:
            return Plan(fwd, "none", "none", reason, cdt, autotuned=True, key=base.key)
        gy = run_forward(fwd, xs, ws, None, args.stride, args.padding, args.dilation, args.groups)
        gw_cands = ["fft", "aten", "aten_cl"]
        if native.kernels_grad_weight_ok(xs, tuple(weight.shape), args):
            gw_cands.append("kernels")
        if use_triton:
            gw_cands.append("triton")
        gtimes = {}
        for impl in gw_cands:
            try:
                gtimes[impl] = _time(
                    lambda impl=impl: compute_grad_weight(
                        impl, gy, xs, ws, args.stride, args.sym_padding, args.dilation, args.groups
                    ),
                    repeats=1,
                )
            except Exception as exc:  # noqa: BLE001
                logger.debug("autotune: grad_weight %s failed: %s", impl, exc)
    gw = min(gtimes, key=gtimes.get)
    reason += "; grad_weight " + ", ".join(f"{k}={v * 1e3:.2f}ms" for k, v in gtimes.items())
    gi = fwd
    return Plan(fwd, gi, gw, reason, cdt, autotuned=True, key=base.key)


def plan_key(x, weight_shape: tuple[int, ...], args: ConvArgs, requires_grad: bool, channels_last: bool) -> tuple:
    """The autotune cache key of a convolution (``x`` may be a shape/dtype/device stand-in).

    The layout is part of it: the best implementations differ for NC* and channels-last input.
    """
    return (tuple(x.shape), tuple(weight_shape), args.stride, args.padding, args.dilation, args.groups,
            x.dtype, x.device.type, requires_grad, channels_last)


def choose_plan(x: torch.Tensor, weight: torch.Tensor, args: ConvArgs, requires_grad: bool) -> Plan:
    """Pick the plan for a (validated) convolution: forced > autotuned (cached) > heuristic."""
    key = plan_key(x, tuple(weight.shape), args, requires_grad, _is_channels_last(x))
    plan = heuristic_plan(x, tuple(weight.shape), args, requires_grad)
    plan = Plan(plan.forward, plan.grad_input, plan.grad_weight, plan.reason, plan.compute_dtype, key=key)
    if _STATE.forced:
        return _apply_forced(plan, x)
    tunable = args.groups > 1 or args.max_kernel >= DENSE_FFT_MIN_K[args.nd]
    if _AUTOTUNE[0] and not _STATE.deterministic and tunable:
        with _TUNE_LOCK:
            cached = _TUNE_CACHE.get(key)
        if cached is not None:
            return cached
        try:
            tuned = _autotune(x, weight, args, plan, requires_grad)
        except Exception as exc:  # noqa: BLE001 - autotuning must never break a forward pass
            logger.warning("autotune failed (%s); using the heuristic plan", exc)
            tuned = plan
        with _TUNE_LOCK:
            _TUNE_CACHE[key] = tuned
        logger.info("autotuned %s -> %s/%s/%s", key, tuned.forward, tuned.grad_input, tuned.grad_weight)
        return tuned
    return plan
