"""``largekernel bench deploy``: which inference runtime is fastest for large kernels on this CPU.

Deploy-form (reparameterised) workloads -- single depthwise layers with K = 7, 13, 31 and whole
models -- are run on every runtime of :mod:`largekernel.deploy.bench` (PyTorch eager, PyTorch +
engine, ``torch.compile``, onnxruntime, OpenVINO) at batch 1 (latency) and batch 32
(throughput). Each runtime's output is first checked against PyTorch eager; times are medians,
and every ratio compares runtimes measured in the same run, one after the other.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import tempfile
from typing import Any

import torch
from torch import nn

from largekernel.bench import report
from largekernel.bench.timing import measure

__all__ = ["add_arguments", "run", "build_workload", "WORKLOADS"]

log = logging.getLogger(__name__)

# whole models; replknet_31b at a quarter of its width (128..1024 -> 32..256) so that batch 32
# at 224 px fits the time budget of a 2-core machine
_MODELS: dict[str, dict[str, Any]] = {
    "unireplknet_a": {},
    "unireplknet_t": {},
    "replknet_31b": {"channels": (32, 64, 128, 256)},
    "convnext_atto": {},
}
WORKLOADS = ("dw7", "dw13", "dw31", *_MODELS)
_QUICK_WORKLOADS = ("dw7", "dw31", "unireplknet_a", "convnext_atto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma list of {', '.join(WORKLOADS)}")
    parser.add_argument("--runtimes", default="eager,engine,compile,onnxruntime,openvino",
                        help="comma list of eager, engine, compile, onnxruntime, openvino")
    parser.add_argument("--batch-sizes", default="1,32", help="comma list (1 = latency, 32 = throughput)")
    parser.add_argument("--image-size", type=int, default=224, help="input side for whole models")
    parser.add_argument("--layer-size", type=int, default=56, help="input side for single layers")
    parser.add_argument("--layer-channels", type=int, default=128, help="channels of the single layers")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per runtime (median)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per measurement")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime")
    parser.add_argument("--quick", action="store_true",
                        help="4 workloads, 64 px models / 32 px layers, batch 1 and 8, 3 repeats")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a bar chart of the speed-ups (PNG)")


def build_workload(name: str, *, image_size: int, layer_size: int, layer_channels: int) -> tuple[nn.Module, tuple[int, ...]]:
    """``(deploy-form module, per-sample input shape)`` of a workload.

    Example:
        >>> m, shape = build_workload("dw7", image_size=64, layer_size=16, layer_channels=8)
        >>> shape
        (8, 16, 16)
    """
    from largekernel.models.registry import create_model
    from largekernel.nn.conv import Conv2d
    from largekernel.reparam import reparameterize

    torch.manual_seed(0)
    if name.startswith("dw") and name[2:].isdigit():
        k = int(name[2:])
        layer = Conv2d(layer_channels, layer_channels, k, padding=k // 2, groups=layer_channels)
        return layer.eval().requires_grad_(False), (layer_channels, layer_size, layer_size)
    if name not in _MODELS:
        raise ValueError(f"unknown workload {name!r}; expected dwK (e.g. dw13) or one of {', '.join(_MODELS)}")
    model = reparameterize(create_model(name, **_MODELS[name]))
    return model.requires_grad_(False), (3, image_size, image_size)


def _list(text: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what} must not be empty")
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ValueError(f"--{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def _explain(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """The engine's plan for a single conv layer (why it is or is not fast)."""
    from largekernel.ops import explain

    if not isinstance(model, nn.Conv2d):
        return None
    plan = explain((1, *shape), tuple(model.weight.shape), padding=model.padding, groups=model.groups,
                   requires_grad=False)
    return f"{plan.forward}: {plan.reason}"


def run(args: argparse.Namespace) -> int:
    from largekernel.deploy.bench import RUNTIMES, build_runner, runtime_available

    if args.quick:
        if args.workloads == ",".join(WORKLOADS):
            args.workloads = ",".join(_QUICK_WORKLOADS)
        if args.batch_sizes == "1,32":
            args.batch_sizes = "1,8"
        args.image_size, args.layer_size = min(args.image_size, 64), min(args.layer_size, 32)
        args.layer_channels = min(args.layer_channels, 64)
        args.repeats = min(args.repeats, 3)
        args.max_seconds = min(args.max_seconds, 5.0)
    workloads = _list(args.workloads, "workloads")
    runtimes = _list(args.runtimes, "runtimes", RUNTIMES)
    try:
        batches = [int(b) for b in _list(args.batch_sizes, "batch-sizes")]
    except ValueError:
        raise ValueError(f"--batch-sizes must be a comma list of positive ints, got {args.batch_sizes!r}") from None
    for name, value in (("batch-sizes", min(batches)), ("image-size", args.image_size),
                        ("layer-size", args.layer_size), ("layer-channels", args.layer_channels),
                        ("repeats", args.repeats)):
        if value < 1:
            raise ValueError(f"--{name} must be positive, got {value}")
    missing = [r for r in runtimes if not runtime_available(r)]
    if missing:
        log.warning("skipping runtimes whose package is not installed: %s", ", ".join(missing))
        runtimes = [r for r in runtimes if r not in missing]
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    # build every workload first so that a bad name fails before any timing
    built = {w: build_workload(w, image_size=args.image_size, layer_size=args.layer_size,
                               layer_channels=args.layer_channels) for w in workloads}
    results: list[dict[str, Any]] = []
    # building each runner converts/exports a copy of the model; those per-call INFO lines drown the table
    for noisy in ("largekernel.nn.acceleration", "largekernel.deploy.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lk-bench-deploy-") as workdir:
        for w, (model, shape) in built.items():
            for batch in batches:
                results.append(_bench_one(w, model, shape, batch, runtimes, args, workdir, build_runner))
    _log_table(results, runtimes)
    payload = {
        "benchmark": "deploy",
        "machine": report.machine_info(),
        "settings": {"threads": torch.get_num_threads(), "workloads": workloads, "runtimes": runtimes,
                     "batch_sizes": batches, "image_size": args.image_size, "layer_size": args.layer_size,
                     "layer_channels": args.layer_channels, "repeats": args.repeats,
                     "max_seconds": args.max_seconds, "quick": args.quick},
        "results": results,
    }
    report.write_outputs(args.json, args.plot, payload, lambda path: _plot(path, results, runtimes))
    return 0


def _bench_one(workload, model, shape, batch, runtimes, args, workdir, build_runner) -> dict[str, Any]:
    from largekernel.nn.acceleration import to_torch_convs

    x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = to_torch_convs(copy.deepcopy(model))(x)
    entry: dict[str, Any] = {"workload": workload, "batch": batch, "input": [batch, *shape],
                             "engine_plan": _explain(model, shape), "runtimes": {}}
    for name in runtimes:
        sub = os.path.join(workdir, f"{workload}-{batch}-{name}")
        os.makedirs(sub, exist_ok=True)
        try:
            runner = build_runner(name, model, x, sub)
            out = runner(x)  # first call: compiles / warms up, and the check
            diff = float((out.float() - ref).abs().max())
            timing = measure(lambda: runner(x), warmup=1, repeats=args.repeats, max_seconds=args.max_seconds)
        except Exception as exc:  # a runtime that cannot run this model is a result, not a crash
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("%s batch %d on %s failed: %s", workload, batch, name, msg)
            entry["runtimes"][name] = {"error": msg}
            continue
        entry["runtimes"][name] = {"median_ms": 1000 * timing.median, "min_ms": 1000 * timing.minimum,
                                   "runs": len(timing.times), "images_per_s": batch / timing.median,
                                   "max_abs_diff": diff}
        log.info("%-14s batch %-3d %-12s %9.2f ms (max |diff| %.1e)", workload, batch, name,
                 1000 * timing.median, diff)
    times = {k: v["median_ms"] for k, v in entry["runtimes"].items() if "median_ms" in v}
    if "eager" in times:
        entry["speedup_vs_eager"] = {k: times["eager"] / t for k, t in times.items()}
    if times:
        entry["fastest"] = min(times, key=times.get)
    return entry


def _log_table(results: list[dict[str, Any]], runtimes: list[str]) -> None:
    headers = ["workload", "batch", *[f"{r} ms" for r in runtimes], "fastest"]
    rows = []
    for e in results:
        rows.append([e["workload"], e["batch"],
                     *[e["runtimes"].get(r, {}).get("median_ms") for r in runtimes], e.get("fastest")])
    for line in report.format_table(headers, rows).splitlines():
        log.info("%s", line)


def _plot(path: str, results: list[dict[str, Any]], runtimes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    batches = sorted({e["batch"] for e in results})
    fig, axes = plt.subplots(len(batches), 1, figsize=(10, 3.6 * len(batches)), squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        entries = [e for e in results if e["batch"] == batch]
        xs = np.arange(len(entries))
        width = 0.8 / max(1, len(runtimes))
        for i, r in enumerate(runtimes):
            ys = [e.get("speedup_vs_eager", {}).get(r, np.nan) for e in entries]
            ax.bar(xs + (i - (len(runtimes) - 1) / 2) * width, ys, width, label=r)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(xs, [e["workload"] for e in entries])
        ax.set_yscale("log")
        ax.set_ylabel("speed-up vs PyTorch eager")
        ax.set_title(f"batch {batch} ({'latency' if batch == 1 else 'throughput'})")
        ax.legend(fontsize=8, ncol=len(runtimes))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
