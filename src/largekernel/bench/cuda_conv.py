"""``largekernel bench conv --device cuda``: the Triton depthwise kernels vs PyTorch (cuDNN) on a GPU.

Never run on a GPU by its authors (none was available): it is written to be ready the day one is.
One run times, per case, kernel size, dtype (float32 and bfloat16 by default) and mode (forward,
forward+backward), with CUDA synchronisation around every call:

* ``torch`` / ``torch_cl``: ``F.conv{1,2,3}d`` (cuDNN) on an NCHW / channels-last input;
* ``triton`` / ``triton_cl``: :mod:`largekernel.ops.triton` called directly (forward, then
  grad_input + grad_weight for the backward);
* ``engine``: :func:`largekernel.ops.conv` on the NCHW input (whatever the dispatcher picks; its
  ``explain()`` reason is recorded).

and reports, against the best PyTorch layout of the same run, the speed-up of each; the achieved
DRAM bandwidth (compulsory bytes: every map read/written once per kernel) and FLOP/s
(``2 * prod(K) * N * C * prod(S_out)`` per kernel, x3 for forward+backward) as fractions of the
device's peaks (specification figures when known, plus a measured copy bandwidth and FP32 matmul);
and, for the 2-D cases, the roofline time of :mod:`largekernel.ops.triton.perf_model` next to the
measured one. Writes JSON (``--json``) and a plot (``--plot``).
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any, Callable

import torch

from largekernel.bench import report
from largekernel.bench.conv import _CONV as _CPU_CONV
from largekernel.bench.conv import Case
from largekernel.bench.timing import measure

__all__ = [
    "CUDA_CASES", "QUICK_KS", "require_cuda", "select_cases", "sweep", "ratios", "run_cuda", "run_on", "device_peaks"
]

log = logging.getLogger(__name__)

_CONV = _CPU_CONV
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: A GPU benchmark shape: the same record as the CPU sweep's (depthwise, "same" padding).
CudaCase = Case


CUDA_CASES: dict[str, list[CudaCase]] = {
    "2d": [
        CudaCase("2d_384x32", (64, 384, 32, 32), (3, 5, 7, 9, 13, 17, 21, 27, 31)),
        CudaCase("2d_64x56", (8, 64, 56, 56), (3, 5, 7, 9, 13, 17, 21, 27, 31)),
    ],
    "1d": [CudaCase("1d_4096", (8, 256, 4096), (31, 63, 127, 255, 511, 1023))],
    "3d": [CudaCase("3d_32", (2, 32, 32, 32, 32), (3, 7, 13))],
}
QUICK_KS = {"2d": (7, 13, 31), "1d": (127, 1023), "3d": (7,)}
IMPLS = ("torch", "torch_cl", "triton", "triton_cl", "engine")
MODES = ("fwd", "fwdbwd")
# specification peaks (bytes/s, FP32 FLOP/s) by device-name fragment; see perf_model for sources
_SPEC = {"A100": (2.039e12, 19.5e12), "H100": (3.35e12, 66.9e12)}


def require_cuda() -> None:
    """Raise a one-line, user-facing error when no CUDA device can be used."""
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")


def select_cases(groups_text: str, ks_text: str | None, quick: bool) -> list[CudaCase]:
    """The GPU sweep for ``--cases`` / ``--ks`` / ``--quick``."""
    groups = [g.strip() for g in groups_text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in CUDA_CASES]
    if not groups or unknown:
        raise ValueError(f"--cases: expected some of {sorted(CUDA_CASES)}, got {groups_text!r}")
    ks_override = None
    if ks_text:
        try:
            ks_override = tuple(int(k) for k in ks_text.split(",") if k.strip())
        except ValueError:
            raise ValueError(f"--ks must be comma-separated ints, got {ks_text!r}") from None
        if not ks_override or min(ks_override) < 1:
            raise ValueError(f"--ks entries must be >= 1, got {ks_text!r}")
    out = []
    for g in groups:
        for case in CUDA_CASES[g][:1] if quick else CUDA_CASES[g]:
            ks = ks_override or (QUICK_KS[g] if quick else case.ks)
            out.append(CudaCase(case.name, case.shape, tuple(ks)))
    return out


def device_peaks(device: torch.device) -> dict[str, Any]:
    """Specification and measured peaks of ``device`` (``None`` where unknown)."""
    out: dict[str, Any] = {"name": None, "spec_bytes_per_s": None, "spec_fp32_flops": None}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        out["name"] = name
        for key, (bw, fl) in _SPEC.items():
            if key in name:
                out["spec_bytes_per_s"], out["spec_fp32_flops"] = bw, fl
    n = 4096 if device.type == "cuda" else 256
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the FP32 (non-tensor-core) peak the kernels use
    try:
        t = measure(lambda: torch.mm(a, b), warmup=2, repeats=5, max_seconds=5.0, device=device).median
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    out["measured_fp32_matmul_flops"] = 2.0 * n**3 / t
    buf = torch.empty((64 if device.type == "cuda" else 4) * 2**20 // 4, device=device)
    dst = torch.empty_like(buf)
    t = measure(lambda: dst.copy_(buf), warmup=2, repeats=5, max_seconds=5.0, device=device).median
    out["measured_copy_bytes_per_s"] = 2.0 * buf.numel() * 4 / t
    return out


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.transpose(1, 2).contiguous().transpose(1, 2)  # 1-D: (N, L, C) storage


def _fns(impl: str, x: torch.Tensor, w: torch.Tensor, mode: str) -> Callable[[], Any] | None:
    """A closure timing one implementation; ``None`` when it does not apply to this input."""
    from largekernel.ops import triton as lkt  # noqa: PLC0415 - only when the sweep runs
    from largekernel.ops.conv import conv as engine_conv  # noqa: PLC0415

    nd, c, k = x.dim() - 2, x.shape[1], w.shape[-1]
    pad = (k // 2,) * nd  # odd K: "same"; even K: one extra output per dim, same cost
    ones = (1,) * nd
    if impl.endswith("_cl"):
        x = _channels_last(x)
    if impl.startswith("triton"):
        if not lkt.supports(x, tuple(w.shape), ones, ones, x.dtype):
            return None
        if mode == "fwd":
            return lambda: lkt.depthwise_forward(x, w, ones, pad, ones)
        gy = torch.randn_like(lkt.depthwise_forward(x, w, ones, pad, ones))

        def fwdbwd_triton() -> Any:
            lkt.depthwise_forward(x, w, ones, pad, ones)
            lkt.depthwise_grad_input(gy, w, x.shape, ones, pad, ones)
            return lkt.depthwise_grad_weight(x, gy, w.shape[2:], ones, pad, ones)

        return fwdbwd_triton
    conv = engine_conv if impl == "engine" else _CONV[nd]
    if mode == "fwd":

        def fwd() -> Any:
            with torch.no_grad():
                return conv(x, w, None, 1, pad, 1, c)

        return fwd
    xg, wg = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    gy = torch.randn_like(conv(x, w, None, 1, pad, 1, c).detach())
    return lambda: torch.autograd.grad(conv(xg, wg, None, 1, pad, 1, c), (xg, wg), gy)


def _model_us(case: CudaCase, k: int, dtype: torch.dtype, mode: str, gpu: str | None) -> float | None:
    from largekernel.ops.triton import perf_model  # noqa: PLC0415

    dev = next((d for d in perf_model.DEVICES if gpu and d.name in gpu), None)
    if dev is None or case.dims != 2:
        return None
    costs = perf_model.costs(case.shape, k, torch.empty((), dtype=dtype).element_size(), dev.sms)
    used = costs[:1] if mode == "fwd" else costs
    return sum(c.time(dev)[0] for c in used) * 1e6


def sweep(
    cases: list[CudaCase],
    dtypes: list[torch.dtype],
    device: torch.device,
    *,
    impls: tuple[str, ...] = IMPLS,
    repeats: int = 20,
    max_seconds: float = 2.0,
    seed: int = 0,
    gpu_name: str | None = None,
) -> list[dict[str, Any]]:
    """Time every (case, K, dtype, impl, mode); rows carry times, GF/s, GB/s and the model time."""
    from largekernel.ops.conv import explain  # noqa: PLC0415

    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(seed)
    for case in cases:
        for dtype in dtypes:
            x = torch.randn(case.shape, generator=gen).to(device=device, dtype=dtype)
            esize = x.element_size()
            for k in case.ks:
                w = torch.randn((case.shape[1], 1) + (k,) * case.dims, generator=gen).to(device=device, dtype=dtype)
                flops = 2.0 * k**case.dims * math.prod(case.shape)
                try:
                    plan = explain(x.shape, w.shape, padding=k // 2, groups=case.shape[1], dtype=dtype, device=device)
                    plan_text = f"{plan.forward}/{plan.grad_input}/{plan.grad_weight}: {plan.reason}"
                except Exception as exc:  # noqa: BLE001 - the plan is informative only
                    plan_text = f"explain() failed: {type(exc).__name__}: {exc}"
                for mode in MODES:
                    # compulsory traffic: fwd reads x, writes y; backward adds gy->gx and x,gy->gw
                    nbytes = esize * math.prod(case.shape) * (2 if mode == "fwd" else 6)
                    for impl in impls:
                        row: dict[str, Any] = {
                            "case": case.name, "shape": list(case.shape), "k": k, "dtype": str(dtype).split(".")[-1],
                            "impl": impl, "mode": mode, "flops": flops * (1 if mode == "fwd" else 3), "bytes": nbytes,
                        }
                        if impl == "engine":
                            row["engine_plan"] = plan_text
                        try:
                            fn = _fns(impl, x, w, mode)
                            if fn is None:
                                row["skipped"] = "unsupported by this implementation"
                            else:
                                t = measure(fn, warmup=2, repeats=repeats, max_seconds=max_seconds, device=device)
                                row.update(median_s=t.median, min_s=t.minimum, times=t.times,
                                           gflops=row["flops"] / t.median / 1e9, gbytes_per_s=nbytes / t.median / 1e9)
                        except (RuntimeError, ValueError, TypeError) as exc:  # e.g. out of memory: record it
                            row["skipped"] = f"{type(exc).__name__}: {exc}"
                            log.warning("%s K=%d %s %s %s: %s", case.name, k, row["dtype"], impl, mode, exc)
                        if impl.startswith("triton"):
                            row["model_us"] = _model_us(case, k, dtype, mode, gpu_name)
                        rows.append(row)
                log.info("%s K=%d %s done", case.name, k, dtype)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-up of each non-PyTorch implementation over PyTorch's best layout in the same run."""
    times = {(r["case"], r["k"], r["dtype"], r["mode"], r["impl"]): r["median_s"] for r in rows if "median_s" in r}
    out = []
    for case, k, dtype, mode in sorted({key[:4] for key in times}, key=str):
        base = [times[(case, k, dtype, mode, i)] for i in ("torch", "torch_cl") if (case, k, dtype, mode, i) in times]
        for impl in ("triton", "triton_cl", "engine"):
            t = times.get((case, k, dtype, mode, impl))
            if t and base:
                out.append({"case": case, "k": k, "dtype": dtype, "mode": mode, "impl": impl,
                            "speedup_vs_torch_best": min(base) / t})
    return out


def _plot(path: str, rows: list[dict[str, Any]]) -> None:
    panels: dict[str, dict[str, tuple[list[float], list[float | None]]]] = {}
    for case, dtype, mode in dict.fromkeys((r["case"], r["dtype"], r["mode"]) for r in rows):
        series = {}
        for impl in IMPLS:
            sel = [r for r in rows if (r["case"], r["dtype"], r["mode"], r["impl"]) == (case, dtype, mode, impl)]
            if sel:
                series[impl] = ([r["k"] for r in sel], [r.get("median_s", float("nan")) * 1e3 for r in sel])
        panels[f"{case} {dtype} {mode}"] = series
    report.plot_lines(path, panels, xlabel="kernel size K", ylabel="time (ms)", logx=True, logy=True,
                      title="largekernel bench conv --device cuda")


def run_cuda(args: argparse.Namespace) -> int:
    """Entry point of ``bench conv --device cuda`` (checks for a GPU first)."""
    require_cuda()
    return run_on(args, torch.device("cuda"))


def run_on(args: argparse.Namespace, device: torch.device, impls: tuple[str, ...] = IMPLS) -> int:
    """The GPU benchmark on ``device`` (tests run it on CPU tensors through Triton's interpreter)."""
    if args.dtype not in ("float32", "bfloat16"):
        raise ValueError(
            f"--device cuda: --dtype must be float32 (runs float32 and bfloat16) or bfloat16, got {args.dtype}"
        )
    dtypes = [_DTYPES[d] for d in (["float32", "bfloat16"] if args.dtype == "float32" else [args.dtype])]
    cases = select_cases(args.cases, args.ks, args.quick)
    peaks = device_peaks(device)
    log.info("device %s; measured %.0f GB/s copy, %.1f TFLOP/s FP32 matmul", peaks["name"] or device.type,
             peaks["measured_copy_bytes_per_s"] / 1e9, peaks["measured_fp32_matmul_flops"] / 1e12)
    rows = sweep(cases, dtypes, device, impls=impls, repeats=max(args.repeats, 1) * 4, gpu_name=peaks["name"],
                 max_seconds=2.0 if device.type == "cuda" else 0.1)
    for r in rows:
        if "median_s" in r:
            for key, peak in (("bytes_per_s", "spec_bytes_per_s"), ("fp32_flops", "spec_fp32_flops")):
                if peaks.get(peak):
                    val = r["gbytes_per_s"] * 1e9 if key == "bytes_per_s" else r["gflops"] * 1e9
                    r[f"frac_of_peak_{key}"] = val / peaks[peak]
    rat = ratios(rows)
    table = [[r["case"], r["k"], r["dtype"], r["mode"], r["impl"], r["speedup_vs_torch_best"]] for r in rat]
    for line in report.format_table(["case", "K", "dtype", "mode", "impl", "x torch best"], table).splitlines():
        log.info("%s", line)
    payload = {"benchmark": "conv", "device": "cuda", "machine": report.machine_info(), "peaks": peaks,
               "settings": {"quick": args.quick, "cases": [c.__dict__ for c in cases],
                            "dtypes": [str(d) for d in dtypes]},
               "results": rows, "ratios": rat}
    report.write_outputs(args.json, args.plot, payload, lambda path: _plot(path, rows))
    return 0
