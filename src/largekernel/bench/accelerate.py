"""``largekernel bench accelerate``: is a model ever slower after :func:`largekernel.accelerate`?

``accelerate`` must cost nothing on models it cannot speed up (small kernels, 1x1 convs) and win on
large-kernel ones. For each model the same weights are timed as plain PyTorch (every conv
``torch.nn.Conv*d``) and accelerated, in three settings: inference at batch 1, inference at batch
32, and a training step (forward + backward) at batch 8. The two variants are timed alternately,
several rounds, and the ratio (PyTorch time / accelerated time, > 1 means faster) is computed from
the medians of the same run.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

from largekernel.bench import report

__all__ = ["add_arguments", "run", "default_models", "compare"]

log = logging.getLogger(__name__)

#: timm models of the issue's "never slower" list (built with random weights, offline)
TIMM_MODELS = ("mobilenetv3_small_100", "efficientnet_b0", "resnet18", "convnext_atto", "inception_next_atto")
#: largekernel models, deploy form (the official UniRepLKNet-A and a RepLKNet with 31x31 kernels)
OWN_MODELS = ("unireplknet_a", "replknet_31b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None, help="comma list (default: the timm list + our own)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--settings", default="infer1,infer32,train8", help="comma list of infer1,infer32,train8")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median)")
    parser.add_argument("--quick", action="store_true", help="128 px, 3 rounds, two small models")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a bar chart of the ratios (PNG)")


def _build(name: str) -> nn.Module:
    """A model by name: largekernel's registry first (deploy form), else timm's (random weights)."""
    import largekernel  # noqa: PLC0415

    if largekernel.is_model(name):
        kwargs: dict[str, Any] = {"num_classes": 1000}
        if name == "replknet_31b":
            kwargs.update(channels=(64, 128, 256, 512))  # half width: the 31x31 kernels, CPU-sized
        return largekernel.reparameterize(largekernel.create_model(name, **kwargs))
    try:
        import timm  # noqa: PLC0415
    except ImportError as err:  # an optional comparison: say what is missing
        raise ValueError(f"model {name!r} is not a largekernel model and timm is not installed") from err
    return timm.create_model(name, pretrained=False, num_classes=1000)


def default_models(quick: bool) -> list[str]:
    """The models benchmarked by default (timm's only when timm is importable)."""
    try:
        import timm  # noqa: F401, PLC0415

        timm_models = list(TIMM_MODELS)
    except ImportError:
        timm_models = []
    if quick:
        return (timm_models[:1] or ["unireplknet_a"]) + ["unireplknet_a"]
    return timm_models + list(OWN_MODELS)


def _closure(model: nn.Module, setting: str, image_size: int) -> Callable[[], None]:
    batch = {"infer1": 1, "infer32": 32, "train8": 8}[setting]
    x = torch.randn(batch, 3, image_size, image_size)
    if setting.startswith("infer"):
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(x)

        return infer
    model.train()

    def train() -> None:
        out = model(x)
        out.float().square().mean().backward()
        for p in model.parameters():
            p.grad = None

    return train


def compare(name: str, setting: str, image_size: int, rounds: int) -> dict[str, Any]:
    """Time plain and accelerated ``name`` alternately; return medians and their ratio."""
    from largekernel.nn.acceleration import accelerate, to_torch_convs  # noqa: PLC0415

    torch.manual_seed(0)
    plain = to_torch_convs(_build(name))
    fast = accelerate(copy.deepcopy(plain))
    converted = sum(type(m).__module__ == "largekernel.nn.conv" for m in fast.modules())
    fns = {"torch": _closure(plain, setting, image_size), "engine": _closure(fast, setting, image_size)}
    for fn in fns.values():  # warm-up: allocator, oneDNN primitives, compiled kernels
        fn()
        fn()
    times: dict[str, list[float]] = {"torch": [], "engine": []}
    for r in range(rounds):
        order = ("torch", "engine") if r % 2 == 0 else ("engine", "torch")
        for mode in order:
            start = time.perf_counter()
            fns[mode]()
            times[mode].append(time.perf_counter() - start)
    med = {mode: statistics.median(ts) for mode, ts in times.items()}
    return {
        "model": name,
        "setting": setting,
        "converted_convs": converted,
        "torch_ms": med["torch"] * 1e3,
        "engine_ms": med["engine"] * 1e3,
        "speedup": med["torch"] / med["engine"],
        "times": times,
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    image_size = 128 if args.quick else args.image_size
    rounds = 3 if args.quick else args.rounds
    models = [m.strip() for m in args.models.split(",")] if args.models else default_models(args.quick)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in ("infer1", "infer32", "train8")]
    if unknown:
        raise ValueError(f"--settings: unknown {unknown}; expected a comma list of infer1,infer32,train8")
    results = []
    for name in tqdm(models, desc="bench accelerate", unit="model"):
        for setting in settings:
            res = compare(name, setting, image_size, rounds)
            log.info(
                "%s %s: PyTorch %.2f ms, accelerated %.2f ms -> %.2fx (%d convs on the engine)",
                name, setting, res["torch_ms"], res["engine_ms"], res["speedup"], res["converted_convs"],
            )
            results.append(res)
    rows = [[r["model"], r["setting"], r["converted_convs"], r["torch_ms"], r["engine_ms"], r["speedup"]] for r in results]
    log.info(
        "\n%s",
        report.format_table(["model", "setting", "engine convs", "PyTorch ms", "accelerated ms", "speed-up"], rows),
    )
    payload = {
        "benchmark": "accelerate",
        "machine": report.machine_info(),
        "threads": torch.get_num_threads(),
        "image_size": image_size,
        "rounds": rounds,
        "results": results,
    }
    report.write_outputs(args.json, args.plot, payload, lambda path: _plot(results, path))
    return 0


def _plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = [f"{r['model']}\n{r['setting']}" for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(results)), 4))
    ax.bar(range(len(results)), [r["speedup"] for r in results], color="tab:blue")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(results)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("PyTorch time / accelerated time")
    ax.set_title("largekernel.accelerate: speed-up per model and setting")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
