from __future__ import annotations

import time

from largekernel.bench.timing import measure


def test_measure_counts_calls_and_reports_median():
    calls = []
    result = measure(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(result.times) == 5
    assert result.minimum <= result.median


def test_measure_stops_early_on_time_budget():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    result = measure(slow, warmup=0, repeats=100, max_seconds=0.1)
    assert 1 <= len(result.times) <= 4 and len(calls) == len(result.times)
