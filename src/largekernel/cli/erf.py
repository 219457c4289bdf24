"""``largekernel erf MODEL|CHECKPOINT``: effective receptive field heatmap (PNG) and area ratios (JSON)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["register", "run"]

log = logging.getLogger("largekernel")

_EXAMPLE = """examples:
  largekernel erf unireplknet_a --num-images 10 --image-size 224 -o erf_a
  largekernel erf runs/digits/ --data digits --num-images 50
  largekernel erf convnext_atto --kernel-sizes 3,7,13,31 --model-kwargs '{"ls_init_value": 1}'
  largekernel erf convnext_atto --compare unireplknet_a --model-kwargs '{"num_classes": 0}' -o cmp

writes PREFIX.png (heatmap; side by side with --compare, on one colour scale) and PREFIX.json
(RepLKNet's high-contribution area ratios at t = 0.2, 0.3, 0.5, 0.99)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "erf", help="effective receptive field of a model or checkpoint",
        description="Effective receptive field (RepLKNet's definition): the input gradient of the "
                    "ReLU'd central unit of a stage's feature map, ReLU'd, summed over channels and "
                    "averaged over images; heatmap and area ratios.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", metavar="MODEL|CHECKPOINT", help="model name or checkpoint")
    parser.add_argument("--compare", nargs="+", metavar="MODEL", default=[],
                        help="more models/checkpoints drawn side by side with the first")
    parser.add_argument("--data", default=None,
                        help="images: a data-set spec (digits, pathfinder, folder:PATH, ...) or 'noise' "
                             "(Gaussian images; default: the checkpoint's data set, else noise)")
    parser.add_argument("--split", default="test", help="data-set split (default test)")
    parser.add_argument("--num-images", type=int, default=10, help="images averaged (default 10)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side (default: the checkpoint's, else 224)")
    parser.add_argument("--stage", type=int, default=-1, help="stage whose central unit is used (default -1)")
    parser.add_argument("--model-kwargs", default=None, help="JSON options for model names")
    parser.add_argument("--kernel-sizes", default=None, metavar="K,K,...",
                        help="compare MODEL (a name) built with each kernel size in every block, same depth")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the model init and noise images")
    parser.add_argument("-o", "--output", default="erf", help="output prefix (PREFIX.png, PREFIX.json)")
    parser.set_defaults(func=run)


def _images(spec: str, split: str, n: int, size: int, in_chans: int, seed: int):
    import torch

    if spec == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, in_chans, size, size, generator=g)
    from largekernel.data import build_dataset

    ds = build_dataset(spec, split, image_size=size)
    if ds.info.in_chans != in_chans:
        raise ValueError(f"--data {spec} has {ds.info.in_chans}-channel images but the model expects "
                         f"{in_chans} channels")
    n = min(n, len(ds))
    return torch.stack([ds[i][0] for i in range(n)])


def _in_chans(model) -> int:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    raise ValueError("the model has no convolution to read its input channels from")


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel.analysis._io import output_paths, write_json
    from largekernel.analysis._models import (kernel_size_kwargs, parse_model_kwargs, resolve_model, stage_index,
                                              stage_reduction)
    from largekernel.analysis.erf import erf, plot_erf_comparison
    from largekernel.cli import UsageError

    targets = ([args.target] if args.target else []) + list(args.compare)
    if not targets:
        raise UsageError("give a MODEL or CHECKPOINT (and optionally --compare A B ...)")
    if args.num_images < 1:
        raise UsageError(f"--num-images must be positive, got {args.num_images}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if args.image_size is not None and args.image_size < 1:
        raise UsageError(f"--image-size must be positive, got {args.image_size}")
    kwargs = parse_model_kwargs(args.model_kwargs)
    variants: list[tuple[str, dict | None, str | None]] = []
    if args.kernel_sizes:
        if not args.target or _is_path(args.target) or args.compare:
            raise UsageError("--kernel-sizes needs one MODEL name (no checkpoint, no --compare)")
        try:
            sizes = [int(s) for s in args.kernel_sizes.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--kernel-sizes must be a comma list of odd ints, got {args.kernel_sizes!r}") from None
        for k in sizes:
            try:
                variants.append((args.target, kernel_size_kwargs(args.target, k, kwargs), f"{args.target} K={k}"))
            except ValueError as err:
                raise UsageError(f"--kernel-sizes: {err}") from None
    else:
        variants = [(t, None if _is_path(t) else kwargs, None) for t in targets]
    png, js = output_paths(args.output, ".png", ".json")
    results, summaries = [], []
    from largekernel.analysis.plotting import progress_bar

    # one bar over the models when there are several (each ERF adds its own over the batches)
    for target, target_kwargs, label in progress_bar(variants, total=len(variants), desc="models",
                                                     disable=len(variants) < 2):
        torch.manual_seed(args.seed)
        resolved = resolve_model(target, target_kwargs, arg="MODEL")
        if label:
            resolved.label = label
        model = resolved.model
        try:
            stage = stage_index(model, args.stage, arg="--stage")
        except ValueError as err:
            raise UsageError(str(err)) from None
        data_info: dict[str, Any] = resolved.data_info or {}
        size = args.image_size or int(data_info.get("image_size") or 224)
        stride = stage_reduction(model, stage)
        if size < stride:
            raise UsageError(f"--image-size {size} is smaller than the stride {stride} of stage {stage} of "
                             f"{resolved.label}; use at least {stride}")
        spec = args.data or data_info.get("spec") or "noise"
        images = _images(spec, args.split, args.num_images, size, _in_chans(model), args.seed)
        result = erf(model, images, stage, batch_size=args.batch_size, label=resolved.label,
                     progress=len(images) > args.batch_size)
        result.meta.update(source=resolved.source, data=spec, image_size=size)
        results.append(result)
        summaries.append(result.to_dict())
        ratios = ", ".join(f"t={t}: {v['area_ratio']:.4f}" for t, v in summaries[-1]["area_ratios"].items())
        sys.stdout.write(f"{resolved.label}  stage {stage}, {result.num_images} images of {size}px ({spec})\n"
                         f"  area ratio  {ratios}\n")
    if len(results) == 1:
        results[0].plot(png)
    else:
        plot_erf_comparison(results, png)
    write_json(js, {"models": summaries})
    return 0


def _is_path(target: str) -> bool:
    from pathlib import Path

    return Path(target).exists()
