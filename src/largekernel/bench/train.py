"""``largekernel bench train``: training throughput with and without the engine.

One optimiser step (forward + backward + AdamW step) of the same model, with the same initial
weights and batch, is timed twice: with its convolutions on PyTorch and after
:func:`largekernel.nn.acceleration.accelerate`. Reports images/s from the median step time.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from typing import Any

import torch
from torch.nn import functional as F

from largekernel.bench import report
from largekernel.bench.timing import measure_interleaved

__all__ = ["add_arguments", "run", "step_fn"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="unireplknet_a", help="registered model name")
    parser.add_argument("--model-kwargs", default=None, help="model options as JSON")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per mode (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget per mode")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (cuda: needs a GPU)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 repeats (smoke run)")
    parser.add_argument("--modes", default="torch,engine", help="comma list of torch,engine")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a bar chart (PNG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also profile one training step per mode: time per layer kind and the roofline gap "
             "(FLOPs at the measured matmul peak plus bytes at the measured memory bandwidth)",
    )
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="clock of the step timings and the --breakdown profile (cpu: this process's "
                             "CPU time; use with --threads 1 on a busy machine)")
    parser.add_argument("--channels-last", action="store_true",
                        help="model and input in channels-last memory format (2-D/3-D models) for the step timings")


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str = "none"):
    """A closure doing one full training step of ``model`` on ``(x, y)`` (on ``x``'s device)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> float:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def run(args: argparse.Namespace) -> int:
    from largekernel.models.registry import create_model
    from largekernel.nn.acceleration import accelerate, to_torch_convs

    device = torch.device(getattr(args, "device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if args.quick:
        args.batch_size = min(args.batch_size, 8)
        args.repeats = min(args.repeats, 2)
    for name in ("image_size", "batch_size", "in_chans", "num_classes", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = sorted(set(modes) - {"torch", "engine"})
    if bad or not modes:
        raise ValueError(f"--modes must be a comma list of torch,engine; got {args.modes!r}")
    kwargs: dict[str, Any] = json.loads(args.model_kwargs) if args.model_kwargs else {}
    if not isinstance(kwargs, dict):
        raise ValueError("--model-kwargs must be a JSON object")
    kwargs.setdefault("in_chans", args.in_chans)
    kwargs.setdefault("num_classes", args.num_classes)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    max_seconds = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else 60.0)

    torch.manual_seed(args.seed)
    base = create_model(args.model, **kwargs)
    g = torch.Generator().manual_seed(args.seed)
    # 1-D / 3-D backbones (model_kwargs spatial_dims=1|3) get a sequence / volume of side image_size
    spatial = (args.image_size,) * int(kwargs.get("spatial_dims", 2))
    x = torch.randn(args.batch_size, kwargs["in_chans"], *spatial, generator=g)
    y = torch.randint(0, kwargs["num_classes"], (args.batch_size,), generator=g)
    machine = report.machine_info()
    results = []
    memory_format = None
    if getattr(args, "channels_last", False):
        memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if memory_format is None:
            raise ValueError(f"--channels-last needs a 2-D or 3-D model input, got {x.dim() - 2} spatial dim(s)")
        x = x.contiguous(memory_format=memory_format)
    steps = {}
    for mode in modes:
        # "torch": every conv is PyTorch's own (what the reference implementations run), so the
        # baseline is not partly accelerated by the engine drop-ins our models are built from
        model = to_torch_convs(copy.deepcopy(base))
        if mode == "engine":
            model = accelerate(model)
        model = model.to(device) if memory_format is None else model.to(device, memory_format=memory_format)
        steps[mode] = step_fn(model, x.to(device), y.to(device), args.amp)
    # the modes alternate step by step, so machine-load drift hits them alike
    clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    timings = measure_interleaved(steps, warmup=args.warmup, repeats=args.repeats,
                                  max_seconds=max_seconds, device=device, clock=clock)
    results = []
    for mode, timing in timings.items():
        results.append({"mode": mode, "median_s": timing.median, "min_s": timing.minimum,
                        "times_s": list(timing.times), "images_per_s": args.batch_size / timing.median})
        log.info("%-6s %.1f images/s (median step %.3f s over %d)", mode, args.batch_size / timing.median,
                 timing.median, len(timing.times))
    if args.breakdown:
        for r in results:
            r["breakdown"] = breakdown(base, r["mode"], x.shape, args.clock)
    by_mode = {r["mode"]: r for r in results}
    speedup = (by_mode["engine"]["images_per_s"] / by_mode["torch"]["images_per_s"]
               if len(by_mode) == 2 else None)
    rows = [[r["mode"], r["images_per_s"], 1000 * r["median_s"], len(r["times_s"])] for r in results]
    for line in report.format_table(["mode", "img/s", "median ms", "steps"], rows).splitlines():
        log.info("%s", line)
    if speedup is not None:
        log.info("engine / torch throughput: %.2fx", speedup)
    payload = {
        "benchmark": "train",
        "machine": machine,
        "settings": {"device": str(device), "threads": torch.get_num_threads(), "model": args.model, "model_kwargs": kwargs, "image_size": args.image_size,
                     "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
                     "amp": args.amp, "quick": args.quick, "max_seconds": max_seconds,
                     "clock": getattr(args, "clock", "wall"), "channels_last": memory_format is not None},
        "results": results,
        "speedup_engine_vs_torch": speedup,
    }
    report.write_outputs(args.json, args.plot, payload, lambda path: _plot(path, results, args))
    return 0


def breakdown(base: torch.nn.Module, mode: str, input_shape, clock: str = "wall") -> dict[str, Any]:
    """Profile one training step of ``base`` in ``mode`` and compare it with its roofline.

    The roofline time of the step is ``FLOPs / matmul peak + bytes / memory bandwidth`` with
    FLOPs = 6 x forward MACs (forward + backward) and the bytes every layer reads and writes, both
    measured on this machine (:func:`largekernel.analysis.peak.measure_peak`); the per-layer
    bound ``max(FLOPs / peak, bytes / bandwidth)`` summed over layers is reported too. The time per
    layer kind shows where the step goes (convolutions, matmuls, normalisation, activations).
    """
    from largekernel.analysis.profile import profile_model  # noqa: PLC0415

    prof = profile_model(base, tuple(input_shape), train=True, accelerate=(mode == "engine"), repeats=3,
                         clock=clock, label=f"{mode}")
    flops = sum(layer.flops for layer in prof.layers)
    nbytes = sum(layer.bytes for layer in prof.layers)
    peak = prof.peak
    roofline_s = flops / (peak.matmul_gflops * 1e9) + nbytes / (peak.bandwidth_gbs * 1e9)
    per_layer_s = sum(layer.ideal_s or 0.0 for layer in prof.layers)
    kinds = prof.by_kind()
    log.info(
        "%s: step %.1f ms, roofline %.1f ms (%.1f GFLOP at %.0f GF/s + %.0f MB at %.1f GB/s) -> %.1fx from the limit",
        mode, 1e3 * prof.step_time_s, 1e3 * roofline_s, flops / 1e9, peak.matmul_gflops, nbytes / 1e6,
        peak.bandwidth_gbs, prof.step_time_s / roofline_s,
    )
    for line in prof.format_gap_table(top=10, by_kind=True).splitlines():
        log.info("%s", line)
    return {
        "step_s": prof.step_time_s, "roofline_s": roofline_s, "per_layer_roofline_s": per_layer_s,
        "gap": prof.step_time_s / roofline_s, "flops": flops, "bytes": nbytes, "peak": peak.to_dict(),
        "by_kind": kinds, "clock": clock,
    }


def _plot(path: str, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    names = [r["mode"] for r in results]
    values = [r["images_per_s"] for r in results]
    bars = ax.bar(names, values, color=["#888888", "#2a7ab9"][: len(names)])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom")
    ax.set_ylabel("training images / s")
    ax.set_title(f"{args.model} {args.image_size}px, batch {args.batch_size}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    log.info("wrote %s", path)
