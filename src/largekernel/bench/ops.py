"""`largekernel bench ops` (not implemented yet)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("largekernel bench ops is not implemented yet")
