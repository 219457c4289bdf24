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

__all__ = ["Timing", "measure", "measure_interleaved", "sync"]


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
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones.

    Stops repeating early once ``max_seconds`` of timed work has accumulated (at least one
    timed call is always made), so pathological baselines don't stall a sweep. ``clock`` is
    ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU time).
    """
    for _ in range(warmup):
        fn()
        sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, repeats):
        start = clock()
        fn()
        sync(device)
        elapsed = clock() - start
        times.append(elapsed)
        spent += elapsed
        if spent > max_seconds:
            break
    return Timing(median=statistics.median(times), minimum=min(times), times=times)


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float = 30.0,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several alternatives in rounds: each round runs every ``fn`` once, in turn.

    On a shared machine the load drifts over seconds; alternating the candidates exposes them to
    the same drift, so their ratio is stable even when absolute times are not. Stops adding rounds
    once any candidate has used ``max_seconds`` (at least one round always runs).

    Args:
        fns: name -> callable, timed in this order within each round.
        warmup: untimed calls of each callable before the first round.
        repeats: rounds.
        max_seconds: budget per candidate.
        device: synchronised after every call (CUDA).
        clock: ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU time).

    Returns:
        name -> :class:`Timing` (medians over the rounds).

    Example:
        >>> timings = measure_interleaved({"a": lambda: sum(range(100)), "b": lambda: None}, repeats=3)
        >>> sorted(timings), len(timings["a"].times)
        (['a', 'b'], 3)
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            start = clock()
            fn()
            sync(device)
            times[name].append(clock() - start)
        if max(sum(v) for v in times.values()) > max_seconds:
            break
    return {
        name: Timing(median=statistics.median(v), minimum=min(v), times=v) for name, v in times.items()
    }

