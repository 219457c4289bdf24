"""``largekernel profile MODEL|CHECKPOINT --input 1x3x224x224``: per-layer efficiency, roofline, efficiency gap."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["register", "run"]

log = logging.getLogger("largekernel")

_EXAMPLE = """examples:
  largekernel profile unireplknet_a --input 1x3x224x224 -o profile_a
  largekernel profile unireplknet_a --input 8x3x64x64 --train --no-accelerate
  largekernel profile runs/digits/ --deploy
  largekernel profile unireplknet_a --deploy --threads 1 --clock cpu   # on a busy machine

writes PREFIX.png (roofline: achieved GF/s vs FLOP/byte against this machine's measured matmul
peak and copy bandwidth) and PREFIX.json (every layer: MACs, params, bytes, intensity, time)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="per-layer efficiency profile and roofline",
        description="Per layer (leaf module): MACs in the papers' convention, parameters, bytes moved, "
                    "arithmetic intensity, measured time and achieved FLOP/s against the measured "
                    "matmul peak; a roofline plot and an efficiency-gap table.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="MODEL|CHECKPOINT", help="model name or checkpoint")
    parser.add_argument("--input", default=None,
                        help="input shape NxCxHxW (default: the checkpoint's 1xCxSxS, else 1x3x224x224)")
    parser.add_argument("--train", action="store_true", help="time a training step (forward + backward)")
    parser.add_argument("--deploy", action="store_true", help="reparameterise (fuse) the model first")
    parser.add_argument("--no-accelerate", action="store_true", help="PyTorch's own convolutions, not the engine")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (medians; default 5)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: process CPU time (with --threads 1, robust to "
                             "other processes competing for the cores)")
    parser.add_argument("--top", type=int, default=15, help="rows of the efficiency-gap table")
    parser.add_argument("--model-kwargs", default=None, help="JSON options for model names")
    parser.add_argument("-o", "--output", default="profile", help="output prefix (PREFIX.png, PREFIX.json)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from largekernel.analysis._io import output_paths, write_json
    from largekernel.analysis._models import parse_model_kwargs, resolve_model
    from largekernel.analysis.profile import parse_input_size, profile_model
    from largekernel.cli import UsageError

    for name, low in (("repeats", 1), ("warmup", 0), ("top", 1)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    kwargs = parse_model_kwargs(args.model_kwargs)
    resolved = resolve_model(args.target, None if Path(args.target).exists() else kwargs, arg="MODEL")
    if args.input is not None:
        size = parse_input_size(args.input, "--input")
    else:
        info = resolved.data_info or {}
        side = int(info.get("image_size") or 224)
        size = (1, int(info.get("in_chans") or 3), side, side)
    _check_input_covers_stride(resolved, size)
    try:
        profile = profile_model(resolved.model, size, train=args.train, deploy=args.deploy,
                                accelerate=not args.no_accelerate, repeats=args.repeats, warmup=args.warmup,
                                label=resolved.label, progress=True, clock=args.clock)
    except RuntimeError as err:  # e.g. a channel mismatch inside the model: the input is wrong
        raise UsageError(f"--input {'x'.join(map(str, size))} does not fit {resolved.label}: "
                         f"{str(err).splitlines()[0]}") from None
    png, js = output_paths(args.output, ".png", ".json")
    profile.plot_roofline(png)
    write_json(js, profile.to_dict())
    peak = profile.peak
    mode = "training step" if args.train else "forward"
    out = [
        f"{resolved.label}  {'x'.join(map(str, size))}, {mode}, {profile.form} form, "
        f"{'engine' if profile.engine else 'PyTorch convs'}, {torch.get_num_threads()} thread(s), {args.clock} clock",
        f"  MACs {profile.total_macs / 1e6:,.2f} M, params {profile.total_params:,}",
        f"  step {1e3 * profile.step_time_s:.2f} ms (with hooks {1e3 * profile.hooked_time_s:.2f} ms, "
        f"{1e3 * profile.unattributed_s:.2f} ms outside leaf modules)",
        f"  machine: matmul peak {peak.matmul_gflops:.1f} GF/s, copy bandwidth {peak.bandwidth_gbs:.1f} GB/s, "
        f"ridge {peak.ridge_point:.1f} FLOP/byte",
        "",
        "efficiency gap by kind of layer (time lost = measured - roofline time):",
        profile.format_gap_table(args.top, by_kind=True),
        "",
        f"top {args.top} layers:",
        profile.format_gap_table(args.top),
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _check_input_covers_stride(resolved, size: tuple[int, ...]) -> None:
    """An image smaller than the model's total stride runs, but on 1 x 1 maps padded from nothing."""
    from largekernel.analysis._models import stage_reduction
    from largekernel.cli import UsageError

    if len(size) != 4:
        return
    try:
        stride = stage_reduction(resolved.model, -1)
    except ValueError:  # no stages (not an image backbone): nothing to check
        return
    if min(size[2:]) < stride:
        raise UsageError(f"--input {'x'.join(map(str, size))}: the image is smaller than {resolved.label}'s "
                         f"total stride {stride}; use H and W of at least {stride}")
