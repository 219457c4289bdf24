"""``largekernel kernels MODEL|CHECKPOINT``: kernel statistics (JSON), kernel images and energy profiles (PNG)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["register", "run"]

log = logging.getLogger("largekernel")

_EXAMPLE = """examples:
  largekernel kernels runs/digits/ -o kernels
  largekernel kernels runs/digits/train_checkpoint.pt --compare runs/digits/model.safetensors -o drb_vs_fused
  largekernel kernels unireplknet_a --deploy --layers stages.2.0.dwconv.lk_origin

writes PREFIX.json (per-layer statistics), PREFIX.png (kernel images), PREFIX_energy.png (spatial
energy profiles) and with --compare PREFIX_compare.png (the two models layer by layer)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kernels", help="kernel statistics of a model or checkpoint",
        description="Per-layer kernel statistics (degenerate filters: near-zero and near-duplicate, "
                    "sparsity, variance entropy, spatial energy by radius), kernel images, and a "
                    "layer-by-layer comparison of two models. Training and deploy forms.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="MODEL|CHECKPOINT", help="model name or checkpoint")
    parser.add_argument("--compare", metavar="OTHER", help="second model/checkpoint, compared layer by layer")
    parser.add_argument("--deploy", action="store_true", help="reparameterise (fuse) the model(s) first")
    parser.add_argument("--layers", help="comma list of conv module names (default: all with kernel >= --min-kernel)")
    parser.add_argument("--min-kernel", type=int, default=2, help="skip smaller kernels (default 2: no 1x1)")
    parser.add_argument("--zero-tol", type=float, default=1e-2, help="near-zero threshold, relative to the layer max")
    parser.add_argument("--dup-tol", type=float, default=0.99, help="|cosine| from which filters are duplicates")
    parser.add_argument("--max-filters", type=int, default=16, help="filters drawn per layer in PREFIX.png")
    parser.add_argument("--model-kwargs", default=None, help="JSON options for model names")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init of model names")
    parser.add_argument("-o", "--output", default="kernels", help="output prefix")
    parser.set_defaults(func=run)


def _load(target: str, kwargs: dict, deploy: bool, seed: int):
    from pathlib import Path

    import torch

    from largekernel.analysis._models import resolve_model

    torch.manual_seed(seed)
    resolved = resolve_model(target, None if Path(target).exists() else kwargs, arg="MODEL")
    if deploy:
        from largekernel.reparam import reparameterize

        resolved.model = reparameterize(resolved.model.eval(), inplace=True)
    return resolved


def run(args: argparse.Namespace) -> int:
    from largekernel.analysis._io import output_paths, write_json
    from largekernel.analysis._models import parse_model_kwargs
    from largekernel.analysis.kernel_stats import (compare_kernel_stats, kernel_stats, plot_comparison,
                                                   plot_energy_profiles, plot_kernels)
    from largekernel.cli import UsageError

    if args.min_kernel < 1:
        raise UsageError(f"--min-kernel must be positive, got {args.min_kernel}")
    if args.max_filters < 1:
        raise UsageError(f"--max-filters must be positive, got {args.max_filters}")
    for name in ("zero_tol", "dup_tol"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    kwargs = parse_model_kwargs(args.model_kwargs)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    options = dict(zero_tol=args.zero_tol, dup_tol=args.dup_tol)
    png, energy_png, js, cmp_png = output_paths(args.output, ".png", "_energy.png", ".json", "_compare.png")
    first = _load(args.target, kwargs, args.deploy, args.seed)
    try:
        stats = kernel_stats(first.model, min_kernel=args.min_kernel, layers=layers, progress=True, **options)
    except ValueError as err:
        raise UsageError(f"--layers: {err}") if layers else err from None
    if not stats:
        raise UsageError(f"{first.label} has no convolution with a kernel of at least --min-kernel "
                         f"{args.min_kernel}")
    payload = {"model": first.label, "source": first.source, "deploy": args.deploy,
               "options": options, "layers": [s.to_dict() for s in stats]}
    lines = [f"{first.label}: {len(stats)} conv layer(s)",
             f"  {'layer':<40} {'kernel':>7} {'filters':>7} {'degen.':>6} {'sparse':>6} {'v.entr':>6} {'r90':>4}"]
    for s in stats:
        k = "x".join(map(str, s.kernel_size))
        lines.append(f"  {s.name[-40:]:<40} {k:>7} {s.num_filters:>7} {s.degenerate_share:6.3f} "
                     f"{s.sparsity:6.3f} {s.variance_entropy:6.3f} {s.energy_radius_90 if s.energy_radius_90 is not None else '-':>4}")
    drawn = [s.name for s in stats if len(s.kernel_size) == 2 and max(s.kernel_size) > 1]
    if layers is not None and drawn:
        plot_kernels(first.model, png, drawn, max_filters=args.max_filters)
    else:
        plot_kernels(first.model, png, None, max_filters=args.max_filters)
    plot_energy_profiles(stats, energy_png, title=f"{first.label}: spatial energy profile")
    if args.compare:
        second = _load(args.compare, kwargs, args.deploy, args.seed)
        rows = compare_kernel_stats(first.model, second.model, min_kernel=args.min_kernel, **options)
        payload["compare"] = {"model": second.label, "source": second.source, "rows": [
            {"name": r["name"], "a": r["a"].to_dict() if r["a"] else None, "b": r["b"].to_dict() if r["b"] else None,
             "relative_change": r["relative_change"], "cosine": r["cosine"]} for r in rows]}
        plot_comparison(rows, cmp_png, labels=(first.label, second.label))
        both = sum(1 for r in rows if r["a"] is not None and r["b"] is not None)
        lines.append(f"compared with {second.label}: {both} layer(s) in both, "
                     f"{len(rows) - both} in only one")
        for r in rows:
            if r["relative_change"] is not None:
                lines.append(f"  {r['name'][-40:]:<40} |b-a|/|a| {r['relative_change']:.3f}  cos {r['cosine']:.3f}")
    write_json(js, payload)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
