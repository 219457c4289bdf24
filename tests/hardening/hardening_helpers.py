"""Helpers of the input-hardening tests (``from hardening_helpers import ...``)."""

from __future__ import annotations

import logging
import struct
import zlib

import torch

from largekernel.cli import main

# one optimiser step on 64 digits: a real run directory in a few seconds
TINY = ["--max-steps", "1", "--train-subset", "64", "--eval-subset", "32", "--batch-size", "32",
        "--quiet", "--threads", "1", "--no-plots", "--no-accelerate", "model_kwargs.dims=[8,16,32,64]"]


def run_cli(argv, caplog):
    """``largekernel.cli.main(argv)`` in-process: (exit code, ERROR messages); never leaks thread settings."""
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="largekernel")
    threads = torch.get_num_threads()
    try:
        code = main(list(map(str, argv)))
    finally:
        torch.set_num_threads(threads)
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]




def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path, width=100_000, height=100_000):
    """A valid PNG header claiming ``width x height`` grey pixels, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)  # the first rows only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path
