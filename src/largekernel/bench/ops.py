"""`largekernel bench ops`: every large-receptive-field operator next to a 7x7 depthwise conv.

For each operator at one common setting (2-D: ``B x C x H x W = 8 x 64 x 56 x 56``; 1-D:
``8 x 256 x 4096``; ``--quick`` shrinks both) the benchmark reports:

* ``forward_ms``: median time of a forward pass in training mode (autograd recording on),
* ``fwd_bwd_ms``: median time of forward + backward of ``y.sum()`` (input requires grad),
* ``backward_ms``: ``fwd_bwd_ms - forward_ms`` (the two medians come from the same run),
* ``peak_mem_mb``: peak of the bytes allocated by the CPU allocator during one forward +
  backward, relative to the start of the step. It comes from the PyTorch profiler's memory
  events (``profile_memory=True``), summed in time order; parameters, the input and anything
  allocated before the step are excluded, so it measures the *activation + workspace* cost of
  the operator itself. ``None`` when the profiler cannot provide it.
* ``params`` and ratios to the baseline of the same dimensionality (``dw7x7`` for 2-D,
  ``dw1d_k31`` for 1-D).

Operators written in other modules are imported lazily: if an import, the construction or a
run fails, the operator is reported with ``status`` ``"unavailable"`` or ``"failed"`` and the
reason (also logged), so the benchmark works whatever is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import pathlib
from typing import Any, Callable

import torch
from torch import nn

from largekernel.bench.timing import measure

__all__ = ["add_arguments", "run", "OPERATORS", "OpSpec", "benchmark_operator", "peak_memory_bytes"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One benchmarked operator: ``build(setting)`` returns the module (imports happen inside)."""

    name: str
    dims: int  # 1 or 2
    description: str
    build: Callable[[dict], nn.Module]
    baseline: bool = False


def _cls(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def _dw_torch_2d(k: int) -> Callable[[dict], nn.Module]:
    return lambda s: nn.Conv2d(s["channels"], s["channels"], k, padding=k // 2, groups=s["channels"])


OPERATORS: tuple[OpSpec, ...] = (
    OpSpec("dw7x7", 2, "torch nn.Conv2d depthwise 7x7 (baseline)", _dw_torch_2d(7), baseline=True),
    OpSpec(
        "engine_dw31x31",
        2,
        "largekernel.nn.conv.Conv2d depthwise 31x31 (engine)",
        lambda s: _cls("largekernel.nn.conv", "Conv2d")(
            s["channels"], s["channels"], 31, padding=15, groups=s["channels"]
        ),
    ),
    OpSpec(
        "inception_dw",
        2,
        "InceptionDWConv2d (3x3 + 1x11 + 11x1 on 3/8 of the channels)",
        lambda s: _cls("largekernel.nn.inception_dw", "InceptionDWConv2d")(s["channels"]),
    ),
    OpSpec(
        "ls_conv",
        2,
        "LSConv (LKP 7x7 + SKA 3x3, G=8)",
        lambda s: _cls("largekernel.nn.ls_conv", "LSConv")(s["channels"]),
    ),
    OpSpec(
        "dcls",
        2,
        "DCLSConv2d depthwise, 26 Gaussian elements on a 17x17 grid",
        lambda s: _cls("largekernel.nn.dcls", "DCLSConv2d")(
            s["channels"], s["channels"], kernel_count=26, dilated_kernel_size=17, padding="same", groups=s["channels"]
        ),
    ),
    OpSpec(
        "cp_conv",
        2,
        "CPConv2d 31x31, rank 32 (full conv in CP form)",
        lambda s: _cls("largekernel.nn.cp_conv", "CPConv2d")(s["channels"], s["channels"], 31, rank=32, padding="same"),
    ),
    OpSpec(
        "dilated_reparam",
        2,
        "DilatedReparamConv 13x13 (UniRepLKNet), training form",
        lambda s: _cls("largekernel.nn.dilated_reparam", "DilatedReparamConv")(s["channels"], 13),
    ),
    OpSpec(
        "replk_conv",
        2,
        "ReparamLargeKernelConv 31x31 + 5x5 (RepLKNet), training form",
        lambda s: _cls("largekernel.nn.replk_conv", "ReparamLargeKernelConv")(
            s["channels"], s["channels"], 31, small_kernel=5
        ),
    ),
    OpSpec(
        "hyper_kernel",
        2,
        "HyperKernelConv2d depthwise, kernel as large as the input",
        lambda s: _cls("largekernel.nn.hyper_kernel", "HyperKernelConv2d")(
            s["channels"], s["channels"], s["size"], groups=s["channels"]
        ),
    ),
    OpSpec(
        "sgconv2d",
        2,
        "SGConv2d, global multi-scale kernel",
        lambda s: _cls("largekernel.nn.sgconv", "SGConv2d")(s["channels"], s["size"], kernel_dim=8),
    ),
    OpSpec(
        "dw1d_k31",
        1,
        "torch nn.Conv1d depthwise K=31 (baseline)",
        lambda s: nn.Conv1d(s["channels"], s["channels"], 31, padding=15, groups=s["channels"]),
        baseline=True,
    ),
    OpSpec(
        "sgconv",
        1,
        "SGConv causal, kernel_dim 64",
        lambda s: _cls("largekernel.nn.sgconv", "SGConv")(s["channels"], s["length"], kernel_dim=min(64, s["length"])),
    ),
    OpSpec(
        "longconv",
        1,
        "LongConv causal, one weight per lag + squash",
        lambda s: _cls("largekernel.nn.long_conv", "LongConv")(s["channels"], s["length"]),
    ),
)

_FULL = {
    "batch": 8, "channels": 64, "size": 56, "batch_1d": 8, "channels_1d": 256, "length": 4096, "repeats": 5, "warmup": 1
}
_QUICK = {
    "batch": 2, "channels": 16, "size": 28, "batch_1d": 2, "channels_1d": 32, "length": 1024, "repeats": 2, "warmup": 1
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``largekernel bench ops``."""
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    parser.add_argument("--json", type=pathlib.Path, default=None, metavar="PATH", help="write results as JSON")
    parser.add_argument("--plot", type=pathlib.Path, default=None, metavar="PATH", help="write a bar chart (PNG)")
    parser.add_argument("--ops", default=None, help="comma-separated operator names (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="2-D batch size (default 8, quick 2)")
    parser.add_argument("--channels", type=int, default=None, help="2-D channels (default 64, quick 16)")
    parser.add_argument("--size", type=int, default=None, help="2-D height = width (default 56, quick 28)")
    parser.add_argument("--batch-1d", type=int, default=None, help="1-D batch size (default 8, quick 2)")
    parser.add_argument("--channels-1d", type=int, default=None, help="1-D channels (default 256, quick 32)")
    parser.add_argument("--length", type=int, default=None, help="1-D sequence length (default 4096, quick 1024)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 1)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per measurement")
    parser.add_argument("--no-memory", action="store_true", help="skip the profiler memory measurement")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    base = dict(_QUICK if args.quick else _FULL)
    for key in base:
        value = getattr(args, key, None)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "warmup" else 1):
                raise ValueError(f"--{key.replace('_', '-')} must be a positive int, got {value!r}")
            base[key] = value
    if args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be > 0, got {args.max_seconds!r}")
    base["max_seconds"] = float(args.max_seconds)
    return base


def _select(ops: str | None) -> list[OpSpec]:
    if ops is None:
        return list(OPERATORS)
    names = [n.strip() for n in ops.split(",") if n.strip()]
    known = {spec.name: spec for spec in OPERATORS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--ops: unknown operator(s) {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]


def peak_memory_bytes(fn: Callable[[], object]) -> int | None:
    """Peak net bytes allocated on the CPU during ``fn()`` (profiler memory events), or ``None``.

    Example:
        >>> peak = peak_memory_bytes(lambda: torch.ones(1024))
        >>> peak is None or peak >= 4096
        True
    """
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        # the raw kineto events hold every allocation (+) and free (-) with a timestamp;
        # FunctionEvents only keep per-op net sums, which hide transient peaks
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except Exception as err:  # noqa: BLE001 - the profiler API is not stable across versions
        log.warning("memory measurement unavailable: %s", err)
        return None
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def benchmark_operator(spec: OpSpec, setting: dict[str, Any], measure_memory: bool = True) -> dict[str, Any]:
    """Build and time one operator; never raises (failures become ``status`` + ``reason``)."""
    dims = spec.dims
    if dims == 2:
        shape = (setting["batch"], setting["channels"], setting["size"], setting["size"])
        op_setting = {"channels": setting["channels"], "size": setting["size"]}
    else:
        shape = (setting["batch_1d"], setting["channels_1d"], setting["length"])
        op_setting = {"channels": setting["channels_1d"], "length": setting["length"]}
    row: dict[str, Any] = {
        "name": spec.name,
        "dims": dims,
        "description": spec.description,
        "baseline": spec.baseline,
        "input_shape": list(shape),
        "status": "ok",
        "reason": None,
        "params": None,
        "forward_ms": None,
        "fwd_bwd_ms": None,
        "backward_ms": None,
        "peak_mem_mb": None,
    }
    try:
        module = spec.build(op_setting)
    except Exception as err:  # noqa: BLE001 - any import/constructor failure marks it unavailable
        row["status"], row["reason"] = "unavailable", f"{type(err).__name__}: {err}"
        log.warning("%s unavailable: %s", spec.name, row["reason"])
        return row
    try:
        module.train()
        row["params"] = sum(p.numel() for p in module.parameters())
        x = torch.randn(*shape, requires_grad=True)

        def forward():
            return module(x)

        def forward_backward():
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x).sum().backward()

        out = forward()
        if tuple(out.shape) != shape:
            log.info("%s output shape %s differs from input %s", spec.name, tuple(out.shape), shape)
        row["output_shape"] = list(out.shape)
        del out
        kwargs = {"warmup": setting["warmup"], "repeats": setting["repeats"], "max_seconds": setting["max_seconds"]}
        fwd = measure(forward, **kwargs)
        both = measure(forward_backward, **kwargs)
        row["forward_ms"] = fwd.median * 1e3
        row["fwd_bwd_ms"] = both.median * 1e3
        row["backward_ms"] = max(0.0, both.median - fwd.median) * 1e3
        row["forward_times_ms"] = [t * 1e3 for t in fwd.times]
        row["fwd_bwd_times_ms"] = [t * 1e3 for t in both.times]
        if measure_memory:
            peak = peak_memory_bytes(forward_backward)
            row["peak_mem_mb"] = None if peak is None else peak / 2**20
    except Exception as err:  # noqa: BLE001 - report and go on with the other operators
        row["status"], row["reason"] = "failed", f"{type(err).__name__}: {err}"
        log.warning("%s failed: %s", spec.name, row["reason"])
    return row


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    baselines = {r["dims"]: r for r in rows if r["baseline"] and r["status"] == "ok"}
    for row in rows:
        base = baselines.get(row["dims"])
        for key in ("forward_ms", "fwd_bwd_ms", "peak_mem_mb"):
            ratio = None
            if base is not None and row[key] is not None and base[key]:
                ratio = row[key] / base[key]
            row[key.rsplit("_", 1)[0] + "_vs_baseline"] = ratio


def _plot(path: pathlib.Path, rows: list[dict[str, Any]]) -> pathlib.Path:
    """Bar charts (time and memory, one row per dimensionality), log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [(d, [r for r in rows if r["dims"] == d and r["status"] == "ok"]) for d in (2, 1)]
    groups = [(d, g) for d, g in groups if g]
    if not groups:
        raise ValueError("nothing to plot: no operator ran successfully")
    fig = Figure(figsize=(13, 4.2 * len(groups)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for (dims, group), (ax_t, ax_m) in zip(groups, axes):
        names = [r["name"] for r in group]
        xs = range(len(names))
        width = 0.4
        ax_t.bar([x - width / 2 for x in xs], [r["forward_ms"] for r in group], width, label="forward")
        ax_t.bar([x + width / 2 for x in xs], [r["backward_ms"] or 1e-3 for r in group], width, label="backward")
        ax_t.set_ylabel("ms (median)")
        ax_t.set_title(f"{dims}-D operators, input {group[0]['input_shape']}")
        ax_t.legend(fontsize=8)
        mem = [r["peak_mem_mb"] if r["peak_mem_mb"] else float("nan") for r in group]
        ax_m.bar(list(xs), mem, 0.6, color="C2")
        ax_m.set_ylabel("peak MB (fwd+bwd, profiler)")
        ax_m.set_title(f"{dims}-D peak memory")
        for ax in (ax_t, ax_m):
            ax.set_xticks(list(xs))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_yscale("log")
            ax.grid(True, axis="y", alpha=0.3)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)
    return path


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["op", "dims", "status", "params", "fwd ms", "bwd ms", "fwd x", "fwd+bwd x", "peak MB"]
    body = [
        [
            r["name"], r["dims"], r["status"], r["params"], r["forward_ms"], r["backward_ms"],
            r.get("forward_vs_baseline"), r.get("fwd_bwd_vs_baseline"), r["peak_mem_mb"],
        ]
        for r in rows
    ]
    try:
        from largekernel.bench.report import format_table

        return format_table(headers, body)
    except ImportError:  # pragma: no cover - report.py is optional
        return "\n".join(" ".join(str(c) for c in row) for row in [headers, *body])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; log a table and write ``--json`` / ``--plot`` when asked. Returns 0."""
    setting = _settings(args)
    specs = _select(args.ops)
    rows = []
    for spec in specs:
        log.info("benchmarking %s", spec.name)
        rows.append(benchmark_operator(spec, setting, measure_memory=not args.no_memory))
    _add_ratios(rows)
    log.info("bench ops results:\n%s", _table(rows))
    payload: dict[str, Any] = {
        "benchmark": "ops",
        "settings": setting,
        "memory_method": (
            "peak of net CPU-allocator bytes during one forward+backward, from torch.profiler "
            "memory events (profile_memory=True); excludes parameters and the input"
        ),
        "timing_method": "median of repeats (largekernel.bench.timing.measure); backward = fwd_bwd - forward",
        "results": rows,
    }
    try:
        from largekernel.bench.report import machine_info

        payload["machine"] = machine_info()
    except ImportError:  # pragma: no cover - report.py is optional
        payload["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.json is not None:
        try:
            from largekernel.bench.report import write_json
        except ImportError:  # pragma: no cover
            import json

            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        else:
            write_json(args.json, payload)
    if args.plot is not None:
        _plot(args.plot, rows)
    return 0

