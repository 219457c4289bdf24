"""This machine's practical ceilings: matmul throughput and memory bandwidth (for rooflines).

Both are *measured* with PyTorch on the current thread settings, not read from a data sheet:
the compute roof is the median GF/s of a square float32 matmul, the memory roof the median GB/s
of copying a buffer much larger than the caches (bytes read + bytes written).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass

import torch

__all__ = ["MachinePeak", "measure_peak", "matmul_gflops", "copy_bandwidth", "get_clock", "CLOCKS"]

#: ``wall``: elapsed time (``time.perf_counter``). ``cpu``: CPU time of this process
#: (``time.process_time``); with one thread it equals the wall time on an idle machine but is not
#: inflated when other processes compete for the cores (time spent waiting is not counted).
CLOCKS = ("wall", "cpu")


def get_clock(clock: str):
    """The timer function for ``clock`` (one of :data:`CLOCKS`).

    Example:
        >>> get_clock("cpu") is time.process_time
        True
    """
    if clock == "wall":
        return time.perf_counter
    if clock == "cpu":
        return time.process_time
    raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachinePeak:
    """Measured roofs (float32).

    Attributes:
        matmul_gflops: GF/s of an ``matmul_size`` square matmul (2 n^3 FLOPs per product).
        bandwidth_gbs: GB/s of a ``copy_bytes`` copy (counting the read and the write).
        threads: ``torch.get_num_threads()`` during the measurement.
    """

    matmul_gflops: float
    bandwidth_gbs: float
    threads: int
    matmul_size: int
    copy_bytes: int
    clock: str = "wall"

    @property
    def ridge_point(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the two roofs meet."""
        return self.matmul_gflops / self.bandwidth_gbs

    def attainable_gflops(self, intensity: float) -> float:
        """Roofline: ``min(peak, intensity * bandwidth)``."""
        return min(self.matmul_gflops, intensity * self.bandwidth_gbs)

    def to_dict(self) -> dict:
        return {**asdict(self), "ridge_point": self.ridge_point}


def median_seconds(fn, repeats: int, warmup: int = 1, clock: str = "wall") -> float:
    """Median time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, on ``clock``."""
    timer = get_clock(clock)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = timer()
        fn()
        times.append(timer() - start)
    return statistics.median(times)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def matmul_gflops(n: int = 1024, repeats: int = 5, clock: str = "wall") -> float:
    """Median GF/s of an ``n x n`` float32 matmul on the CPU.

    Example:
        >>> matmul_gflops(64, repeats=1) > 0
        True
    """
    _check_positive("n", n)
    _check_positive("repeats", repeats)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats, clock=clock)
    return 2.0 * n**3 / seconds / 1e9


def copy_bandwidth(num_bytes: int = 64 * 2**20, repeats: int = 5, clock: str = "wall") -> float:
    """Median GB/s of copying ``num_bytes`` between two float32 buffers (read + write counted).

    Example:
        >>> copy_bandwidth(2**20, repeats=1) > 0
        True
    """
    _check_positive("num_bytes", num_bytes)
    _check_positive("repeats", repeats)
    n = max(1, num_bytes // 4)
    src, dst = torch.ones(n), torch.empty(n)
    seconds = median_seconds(lambda: dst.copy_(src), repeats, clock=clock)
    return 2.0 * 4 * n / seconds / 1e9


def measure_peak(matmul_size: int = 1024, copy_bytes: int = 64 * 2**20, repeats: int = 5,
                 clock: str = "wall") -> MachinePeak:
    """Measure both roofs (about a second on a 2-core machine).

    Args:
        matmul_size: Side of the square matmul.
        copy_bytes: Size of the copied buffer (keep it well above the last-level cache).
        repeats: Timed repetitions of each (the median is kept).
        clock: ``"wall"`` or ``"cpu"`` (see :data:`CLOCKS`; use ``"cpu"`` with one thread on a
            busy machine).

    Example:
        >>> peak = measure_peak(256, 2**22, repeats=1)
        >>> peak.attainable_gflops(1e9) == peak.matmul_gflops
        True
    """
    get_clock(clock)
    gflops = matmul_gflops(matmul_size, repeats, clock)
    bandwidth = copy_bandwidth(copy_bytes, repeats, clock)
    peak = MachinePeak(gflops, bandwidth, torch.get_num_threads(), matmul_size, copy_bytes, clock)
    log.info("measured roofs: matmul %d^2 %.1f GF/s, copy %.0f MiB %.1f GB/s (%d threads, %s clock)",
             matmul_size, gflops, copy_bytes / 2**20, bandwidth, peak.threads, clock)
    return peak
