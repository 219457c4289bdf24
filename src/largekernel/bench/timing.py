"""Timing primitives for the benchmarks: warm-up, repeated runs, medians.

These machines are noisy, so every figure is the median of several repeats, and speed-ups are
ratios measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

__all__ = ["Timing", "measure", "sync"]


@dataclass
class Timing:
    """Result of :func:`measure` (seconds)."""

    median: float
    minimum: float
    times: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float = 30.0,
    device: torch.device | str | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones.

    Stops repeating early once ``max_seconds`` of timed work has accumulated (at least one
    timed call is always made), so pathological baselines don't stall a sweep.
    """
    for _ in range(warmup):
        fn()
        sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if spent > max_seconds:
            break
    return Timing(median=statistics.median(times), minimum=min(times), times=times)
