"""``largekernel bench conv``: the convolution engine vs PyTorch on depthwise large kernels.

One run measures, per case and kernel size, medians of repeated runs (see
:func:`largekernel.bench.timing.measure`) of

* ``torch_nchw``: ``F.conv{1,2,3}d`` on a contiguous input (1-D: conv1d as is),
* ``torch_cl``: the same on a channels-last input (2-D/3-D only),
* ``engine_nchw`` / ``engine_cl``: :func:`largekernel.ops.conv.conv` on the same two inputs,

each for the forward and for forward+backward (gradients w.r.t. input and weight), plus the
native grad-weight kernel alone (``native_gw``) when it is available, and a 2048x2048 matmul as
the machine's practical peak. Achieved GF/s use direct-convolution FLOPs
(``2 * prod(K) * N * C * prod(S_out)``; forward+backward counts 3x). Ratios are taken against
PyTorch's best layout and against the same layout, all within the same run.

The four implementations of one (case, K, mode) are timed in alternating rounds
(:func:`~largekernel.bench.timing.measure_interleaved`), so load that drifts on a shared machine
hits them alike. ``--clock cpu`` times with this process's CPU time instead of the wall clock:
with ``--threads 1`` that is the single core's busy time, nearly independent of other jobs.

Example:
    largekernel bench conv --quick --json conv.json --plot conv.png
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from largekernel.bench import report
from largekernel.bench.timing import Timing, measure, measure_interleaved

__all__ = ["add_arguments", "run", "CASES", "QUICK_KS", "matmul_peak"]

log = logging.getLogger(__name__)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class Case:
    """One benchmark shape: (N, C, *S) depthwise with kernels of sizes ``ks``."""

    name: str
    shape: tuple[int, ...]
    ks: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.shape) - 2


#: Default sweep (all "same" padding, depthwise).
CASES: dict[str, list[Case]] = {
    "2d": [
        Case("2d_56", (8, 64, 56, 56), (3, 5, 7, 9, 13, 17, 21, 27, 31, 51)),
        Case("2d_28", (8, 128, 28, 28), (3, 5, 7, 9, 13, 17, 21, 27, 31, 51)),
    ],
    "1d": [Case("1d_4096", (8, 256, 4096), (31, 127, 511, 4095))],
    "3d": [Case("3d_32", (2, 32, 32, 32, 32), (3, 7, 13, 21))],
}
#: Kernel sizes of ``--quick`` (only the first case of each group).
QUICK_KS: dict[str, tuple[int, ...]] = {"2d": (7, 13, 31), "1d": (127,), "3d": (7,)}

IMPLS = ("torch_nchw", "torch_cl", "engine_nchw", "engine_cl")
MODES = ("fwd", "fwdbwd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench conv`` options."""
    parser.add_argument("--quick", action="store_true", help="small subset (about 2 min on 2 cores)")
    parser.add_argument("--json", metavar="PATH", help="write all raw numbers + machine info here")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of time vs K per case")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--cases", default="2d,1d,3d", help="comma list of case groups: 2d,1d,3d")
    parser.add_argument("--ks", default=None, help="comma list of kernel sizes overriding every case's")
    parser.add_argument(
        "--shapes",
        default=None,
        help="override shapes, e.g. '2d=8x64x56x56,1d=8x256x4096,3d=2x32x32x32x32' (first case per group)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="cap on timed seconds per measurement (default 4, quick 2)"
    )
    parser.add_argument(
        "--max-call-seconds",
        type=float,
        default=30.0,
        help="skip a measurement whose single call is predicted (from smaller K) to exceed this",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16"),
        default="float32",
        help="CPU: the dtype of every run; --device cuda: float32 means float32 and bfloat16 runs",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: Triton kernels vs cuDNN on the GPU (see largekernel.bench.cuda_conv)",
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size for the peak GF/s")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (robust on a busy machine "
                             "with --threads 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (and engine workers) for the run (default: torch's setting)")
    parser.add_argument("--seed", type=int, default=0)


def _parse_list(text: str, name: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{name} must be a non-empty comma-separated list, got {text!r}")
    return items


def _select_cases(args: argparse.Namespace) -> list[Case]:
    groups = _parse_list(args.cases, "--cases")
    unknown = [g for g in groups if g not in CASES]
    if unknown:
        raise ValueError(f"--cases: unknown group(s) {unknown}; expected some of {sorted(CASES)}")
    shapes: dict[str, tuple[int, ...]] = {}
    if args.shapes:
        for item in _parse_list(args.shapes, "--shapes"):
            group, _, dims = item.partition("=")
            if group not in CASES or not dims:
                raise ValueError(f"--shapes: expected GROUP=NxCx..., got {item!r}")
            try:
                shape = tuple(int(v) for v in dims.lower().split("x"))
            except ValueError:
                raise ValueError(f"--shapes: bad shape {dims!r}") from None
            want = {"1d": 3, "2d": 4, "3d": 5}[group]
            if len(shape) != want or min(shape) < 1:
                raise ValueError(f"--shapes: {group} needs {want} positive sizes, got {dims!r}")
            shapes[group] = shape
    ks_override = None
    if args.ks:
        try:
            ks_override = tuple(int(k) for k in _parse_list(args.ks, "--ks"))
        except ValueError:
            raise ValueError(f"--ks must be comma-separated ints, got {args.ks!r}") from None
        if min(ks_override) < 1:
            raise ValueError(f"--ks entries must be >= 1, got {args.ks!r}")
    out = []
    for group in groups:
        group_cases = CASES[group][:1] if args.quick else CASES[group]
        for i, case in enumerate(group_cases):
            shape = shapes.get(group, case.shape) if i == 0 else case.shape
            if i > 0 and group in shapes:
                continue  # an explicit shape replaces the group's sweep
            ks = ks_override or (QUICK_KS[group] if args.quick else case.ks)
            name = case.name if shape == case.shape else f"{group}_" + "x".join(map(str, shape))
            out.append(Case(name, shape, tuple(ks)))
    return out


def matmul_peak(n: int = 2048, repeats: int = 5, clock: Callable[[], float] = time.perf_counter) -> float:
    """Measured GF/s of an ``n x n`` float32 matmul (the machine's practical peak).

    With ``clock=time.process_time`` and several threads this is GF/s per busy core-second.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = measure(lambda: torch.mm(a, b), warmup=1, repeats=repeats, max_seconds=5.0, clock=clock)
    return 2.0 * n**3 / t.median / 1e9


def _flops(case: Case, k: int) -> float:
    # "same" padding, stride 1: output spatial size == input spatial size
    return 2.0 * k**case.dims * math.prod(case.shape)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    raise ValueError("channels-last needs a 4-D or 5-D tensor")


def _make_fn(conv: Callable, x: torch.Tensor, w: torch.Tensor, mode: str, groups: int) -> Callable[[], Any]:
    if mode == "fwd":

        def fwd() -> Any:
            with torch.no_grad():
                return conv(x, w, None, 1, "same", 1, groups)

        return fwd
    xg = x.detach().requires_grad_(True)
    wg = w.detach().requires_grad_(True)
    gy = torch.randn_like(conv(x, w, None, 1, "same", 1, groups).detach())

    def fwdbwd() -> Any:
        y = conv(xg, wg, None, 1, "same", 1, groups)
        return torch.autograd.grad(y, (xg, wg), gy)

    return fwdbwd


class _CpuTracked:
    """Wraps a callable and records this process's CPU time of every call."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn, self.cpu = fn, []

    def __call__(self) -> Any:
        start = time.process_time()
        out = self.fn()
        self.cpu.append(time.process_time() - start)
        return out

    def median_cpu(self, last: int) -> float:
        return statistics.median(self.cpu[-last:])


def _timed_group(fns: dict[str, Callable[[], Any]], repeats: int, max_seconds: float,
                 clock: Callable[[], float]) -> dict[str, tuple[Timing, float]]:
    """Time alternatives in alternating rounds; returns name -> (timing, median CPU seconds).

    A first call slower than ``max_seconds / 2`` is that alternative's only measurement (a
    pathological baseline must not stall the sweep); the others are timed in rounds.
    """
    out: dict[str, tuple[Timing, float]] = {}
    rounds: dict[str, _CpuTracked] = {}
    for name, fn in fns.items():
        tracked = _CpuTracked(fn)
        start = clock()
        tracked()
        first = clock() - start
        if first > max_seconds / 2:
            out[name] = Timing(median=first, minimum=first, times=[first]), tracked.cpu[0]
        else:
            rounds[name] = tracked
    if rounds:
        timings = measure_interleaved(rounds, warmup=0, repeats=repeats, max_seconds=max_seconds, clock=clock)
        for name, timing in timings.items():
            out[name] = timing, rounds[name].median_cpu(len(timing.times))
    return {name: out[name] for name in fns}


def _native_gw_fn(x: torch.Tensor, k: int) -> Callable[[], Any] | None:
    try:
        from largekernel.ops import cpu_kernels
    except ImportError:
        return None
    dims = x.dim() - 2
    if k % 2 == 0 or not cpu_kernels.supports(x, (x.shape[1], 1) + (k,) * dims, 1, 1):
        return None
    gy = torch.randn_like(x)
    kernel, pad = (k,) * dims, (k // 2,) * dims
    return lambda: cpu_kernels.depthwise_grad_weight(x, gy, kernel, (1,) * dims, pad, (1,) * dims)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 0."""
    if getattr(args, "device", "cpu") == "cuda":
        from largekernel.bench.cuda_conv import run_cuda

        return run_cuda(args)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_cpu(args)
    finally:
        torch.set_num_threads(before)


def _run_cpu(args: argparse.Namespace) -> int:
    from largekernel.ops.conv import conv as engine_conv

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    max_seconds = args.max_seconds if args.max_seconds is not None else (2.0 if args.quick else 4.0)
    if max_seconds <= 0:
        raise ValueError(f"--max-seconds must be > 0, got {max_seconds}")
    cases = _select_cases(args)
    dtype = getattr(torch, args.dtype)
    clock_name = getattr(args, "clock", "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    torch.manual_seed(args.seed)
    machine = report.machine_info()
    log.info("machine: %s, torch %s, %d threads, %s clock", machine["cpu"], machine["torch"],
             torch.get_num_threads(), clock_name)
    if args.matmul_size < 1:
        raise ValueError(f"--matmul-size must be >= 1, got {args.matmul_size}")
    peak = matmul_peak(args.matmul_size, repeats=args.repeats, clock=clock)
    log.info("matmul %d^2 peak: %.0f GF/s", args.matmul_size, peak)

    results: list[dict[str, Any]] = []
    for case in cases:
        x = torch.randn(case.shape, dtype=dtype)
        c = case.shape[1]
        inputs = {"nchw": x}
        if case.dims > 1:
            inputs["cl"] = _channels_last(x)
        last: dict[tuple[str, str], tuple[int, float]] = {}  # for predicting runaway baselines
        for k in case.ks:
            w = torch.randn((c, 1) + (k,) * case.dims, dtype=dtype)
            flops = _flops(case, k)
            for mode in MODES:
                rows: dict[str, dict[str, Any]] = {}
                fns: dict[str, Callable[[], Any]] = {}
                for impl in IMPLS:
                    layout = impl.split("_")[1]
                    if layout not in inputs:
                        continue
                    row = {"case": case.name, "dims": case.dims, "shape": list(case.shape), "k": k,
                           "impl": impl, "mode": mode, "flops": flops * (3 if mode == "fwdbwd" else 1)}
                    rows[impl] = row
                    prev = last.get((impl, mode))
                    predicted = prev[1] * (k / prev[0]) ** case.dims if prev else 0.0
                    if predicted > args.max_call_seconds:
                        row.update(skipped=f"predicted {predicted:.0f} s per call > --max-call-seconds")
                        log.info("%s K=%d %s %s: skipped (predicted %.0f s)", case.name, k, impl, mode, predicted)
                        continue
                    conv = _CONV[case.dims] if impl.startswith("torch") else engine_conv
                    fns[impl] = _make_fn(conv, inputs[layout], w, mode, c)
                for impl, (timing, cpu_s) in _timed_group(fns, args.repeats, max_seconds, clock).items():
                    last[(impl, mode)] = (k, timing.median)
                    rows[impl].update(median_s=timing.median, min_s=timing.minimum, times=timing.times, cpu_s=cpu_s,
                                      gflops=rows[impl]["flops"] / timing.median / 1e9)
                    log.debug("%s K=%d %s %s: %.2f ms", case.name, k, impl, mode, timing.median * 1e3)
                results.extend(rows.values())
            gw_fn = _native_gw_fn(inputs.get("cl", x), k)
            if gw_fn is not None:
                timing, cpu_s = _timed_group({"native_gw": gw_fn}, args.repeats, max_seconds, clock)["native_gw"]
                results.append(
                    {
                        "case": case.name,
                        "dims": case.dims,
                        "shape": list(case.shape),
                        "k": k,
                        "impl": "native_gw",
                        "mode": "grad_weight",
                        "flops": flops,
                        "median_s": timing.median,
                        "min_s": timing.minimum,
                        "times": timing.times,
                        "cpu_s": cpu_s,
                        "gflops": flops / timing.median / 1e9,
                    }
                )
            log.info("%s K=%d done", case.name, k)

    ratios = _ratios(results)
    payload = {
        "benchmark": "conv",
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "max_seconds": max_seconds,
            "dtype": args.dtype,
            "clock": clock_name,
            "threads": torch.get_num_threads(),
            "cases": [{"name": c.name, "shape": list(c.shape), "ks": list(c.ks)} for c in cases],
        },
        "matmul_gflops": peak,
        "matmul_size": args.matmul_size,
        "results": results,
        "ratios": ratios,
    }
    for line in _table(results, ratios, peak).splitlines():
        log.info("%s", line)
    report.write_outputs(args.json, args.plot, payload, lambda path: _plot(path, results))
    return 0


def _lookup(results: list[dict[str, Any]]) -> dict[tuple, float]:
    return {(r["case"], r["k"], r["impl"], r["mode"]): r["median_s"] for r in results if "median_s" in r}


def _ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-ups of the engine vs PyTorch's best layout and vs the same layout (>1: engine faster)."""
    times = _lookup(results)
    keys = sorted({(r["case"], r["k"], r["mode"]) for r in results if r["impl"] != "native_gw"}, key=str)
    out = []
    for case, k, mode in keys:
        torch_times = {
            lay: times[(case, k, f"torch_{lay}", mode)]
            for lay in ("nchw", "cl")
            if (case, k, f"torch_{lay}", mode) in times
        }
        best_layout = min(torch_times, key=torch_times.get) if torch_times else None
        for lay in ("nchw", "cl"):
            eng = times.get((case, k, f"engine_{lay}", mode))
            if eng is None:
                continue
            same = torch_times.get(lay)
            out.append(
                {
                    "case": case,
                    "k": k,
                    "mode": mode,
                    "engine_layout": lay,
                    "torch_best_layout": best_layout,
                    "vs_best": torch_times[best_layout] / eng if best_layout else None,
                    "vs_same": same / eng if same else None,
                }
            )
    return out


def _table(results: list[dict[str, Any]], ratios: list[dict[str, Any]], peak: float) -> str:
    times = _lookup(results)
    gf = {(r["case"], r["k"], r["impl"], r["mode"]): r["gflops"] for r in results if "gflops" in r}
    best_cl = {(r["case"], r["k"], r["mode"], r["engine_layout"]): r["vs_best"] for r in ratios}
    same = {(r["case"], r["k"], r["mode"], r["engine_layout"]): r["vs_same"] for r in ratios}
    headers = ["case", "K", "mode"] + [f"{i} ms" for i in IMPLS]
    headers += ["engine GF/s", "x best(nchw)", "x best(cl)", "x same(nchw)", "x same(cl)", "gw ms", "gw GF/s"]
    rows = []
    keys = sorted({(r["case"], r["k"], r["mode"]) for r in results if r["impl"] != "native_gw"})
    for case, k, mode in keys:

        def ms(impl: str) -> float | None:
            t = times.get((case, k, impl, mode))
            return None if t is None else t * 1e3

        eng_gf = max((gf.get((case, k, f"engine_{lay}", mode)) or 0.0) for lay in ("nchw", "cl")) or None
        gw_t = times.get((case, k, "native_gw", "grad_weight")) if mode == "fwdbwd" else None
        gw_gf = gf.get((case, k, "native_gw", "grad_weight")) if mode == "fwdbwd" else None
        rows.append(
            [case, k, mode]
            + [ms(i) for i in IMPLS]
            + [
                eng_gf,
                best_cl.get((case, k, mode, "nchw")),
                best_cl.get((case, k, mode, "cl")),
                same.get((case, k, mode, "nchw")),
                same.get((case, k, mode, "cl")),
                None if gw_t is None else gw_t * 1e3,
                gw_gf,
            ]
        )
    title = (
        f"depthwise conv, 'same' padding; matmul peak {peak:.0f} GF/s; "
        "x best / x same = PyTorch (best layout / same layout) time over engine time (engine given NCHW or CL)"
    )
    return title + "\n" + report.format_table(headers, rows)


def _plot(path: str, results: list[dict[str, Any]]) -> None:
    panels: dict[str, dict[str, tuple[list[float], list[float | None]]]] = {}
    for case in dict.fromkeys(r["case"] for r in results):
        for mode, label in (("fwd", "forward"), ("fwdbwd", "forward+backward")):
            series: dict[str, tuple[list[float], list[float | None]]] = {}
            impls = list(IMPLS) + (["native_gw"] if mode == "fwdbwd" else [])
            for impl in impls:
                want = "grad_weight" if impl == "native_gw" else mode
                rows = [r for r in results if r["case"] == case and r["impl"] == impl and r["mode"] == want]
                if rows:
                    series[impl] = (
                        [r["k"] for r in rows],
                        [r["median_s"] * 1e3 if "median_s" in r else None for r in rows],
                    )
            panels[f"{case} {label}"] = series
    report.plot_lines(
        path, panels, xlabel="kernel size K", ylabel="time (ms)", logx=True, logy=True, title="largekernel bench conv"
    )
