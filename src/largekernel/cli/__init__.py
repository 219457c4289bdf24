"""The ``largekernel`` command line.

Each subcommand lives in its own module ``largekernel.cli.<name>`` exposing
``register(subparsers)``, which adds an ``argparse`` sub-parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). The hub below only wires them up.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "build_parser", "parse_args"]

_SUBCOMMAND_MODULES = (
    "train",
    "evaluate",
    "predict",
    "reparameterize",
    "info",
    "bench",
    "export",
    "erf",
    "kernels",
    "profile",
    "experiment",
    "pretrain",
)

log = logging.getLogger("largekernel")


class UsageError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="largekernel",
        description="Fast large-kernel ConvNets: train, evaluate, deploy and benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(f"largekernel.cli.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, accepting ``KEY=VALUE`` overrides before, between and after flags.

    argparse ends a ``nargs="*"`` positional at the first flag, so ``train a=1 --quiet b=2``
    would reject ``b=2``; the stragglers are appended to the overrides in command-line order.
    Anything else unrecognised is still a usage error (exit code 2).
    """
    args, extras = parser.parse_known_args(argv)
    if extras:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extras):
            args.overrides = list(args.overrides or []) + extras
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UsageError, FileNotFoundError, ValueError, TypeError) as err:
        # errors the user can fix: one clear line, no traceback (use -v for details)
        if args.verbose:
            log.exception("failed")
        else:
            log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
