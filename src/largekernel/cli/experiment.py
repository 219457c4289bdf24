"""``largekernel experiment kernel-size``: train the same-depth network with kernel sizes 3 ... 31."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["register", "run_kernel_size"]

log = logging.getLogger("largekernel")

_EXAMPLE = """examples:
  largekernel experiment kernel-size --quick --output runs/ks_quick
  largekernel experiment kernel-size --kernel-sizes 3,7,13,31 --data pathfinder32-easy,digits epochs=20
  largekernel experiment kernel-size --data digits epochs=10 seed=1
  largekernel experiment kernel-size --cached-only     # table and plot of what has finished so far

every run is cached in OUTPUT/<data>/k<K>/result.json with its config; re-running only trains what
is missing, and continues a run that was interrupted (Ctrl-C, SIGTERM, a crash after a
checkpoint) where it stopped. Writes OUTPUT/kernel_size.png (accuracy, ERF area ratio, time per step vs K) and
OUTPUT/kernel_size.json."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("experiment", help="reproducible experiments (kernel-size)",
                                   description="Reproducible experiments about large kernels.")
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    ks = sub.add_parser(
        "kernel-size", help="accuracy, ERF and time per step against kernel size",
        description="Train the same-depth network with each kernel size on each data set (cached), "
                    "measure the trained model's ERF, and plot accuracy, ERF area ratio and time per step "
                    "against kernel size.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ks.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training overrides (e.g. epochs=20)")
    ks.add_argument("--kernel-sizes", default=None, help="comma list of odd sizes (default 3,7,13,17,31; "
                                                         "3,13 with --quick)")
    ks.add_argument("--data", default="pathfinder32-easy,digits", help="comma list of data-set specs")
    ks.add_argument("--quick", action="store_true", help="smoke-sized training (a few steps per run)")
    ks.add_argument("--config", default=None, help="base YAML (default: the packaged kernel_size_experiment.yaml)")
    ks.add_argument("--erf-images", type=int, default=16, help="test images averaged per ERF")
    ks.add_argument("--threshold", type=float, default=0.5, help="ERF area-ratio threshold in the table/plot")
    ks.add_argument("--force", action="store_true", help="re-train even if a cached result matches")
    ks.add_argument("--cached-only", action="store_true",
                    help="train nothing: table and plot of the runs already cached (lists the missing ones)")
    ks.add_argument("--output", default="runs/kernel_size", help="output directory")
    ks.set_defaults(func=run_kernel_size)
    parser.set_defaults(func=lambda args: _missing(parser))


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_kernel_size(args: argparse.Namespace) -> int:
    from largekernel.analysis.experiment import run_kernel_size_experiment
    from largekernel.cli import UsageError

    ks = None
    if args.kernel_sizes:
        try:
            ks = [int(s) for s in args.kernel_sizes.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--kernel-sizes must be a comma list of ints, got {args.kernel_sizes!r}") from None
        if not ks or any(k < 3 or k % 2 == 0 for k in ks):
            raise UsageError(f"--kernel-sizes must be odd ints >= 3, got {args.kernel_sizes!r}")
    datasets = [s.strip() for s in args.data.split(",") if s.strip()]
    if not datasets:
        raise UsageError("--data must name at least one data set")
    if args.erf_images < 1:
        raise UsageError(f"--erf-images must be positive, got {args.erf_images}")
    if args.threshold not in (0.2, 0.3, 0.5, 0.99):
        raise UsageError(f"--threshold must be one of 0.2, 0.3, 0.5, 0.99, got {args.threshold:g}")
    if args.force and args.cached_only:
        raise UsageError("--force and --cached-only exclude each other")
    from largekernel.data import dataset_info

    for spec in datasets:
        try:
            dataset_info(spec)
        except ValueError as err:
            raise UsageError(f"--data: {err}") from None
    from largekernel.train.trainer import TrainingInterrupted

    try:
        result = run_kernel_size_experiment(args.output, kernel_sizes=ks, datasets=datasets,
                                            overrides=args.overrides, quick=args.quick, base_config=args.config,
                                            erf_images=args.erf_images, force=args.force,
                                            cached_only=args.cached_only, threshold=args.threshold)
    except TrainingInterrupted as err:
        log.warning("%s; run the same command again to continue", err)
        return 128 + int(err.signum)
    sys.stdout.write(result.table(args.threshold) + "\n")
    missing = result.meta.get("missing") or []
    if missing:
        sys.stdout.write("not run yet (no cached result): " + ", ".join(
            f"{m['data']} K={m['kernel_size']}" for m in missing) + "\n")
    return 0
