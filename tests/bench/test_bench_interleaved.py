"""Interleaved timing and the channels-last / CPU-clock options of `largekernel bench train`."""

from __future__ import annotations

import json

from largekernel.bench.timing import measure_interleaved
from largekernel.cli import main

TINY = ["--image-size", "16", "--batch-size", "4", "--repeats", "2", "--warmup", "0",
        "--model-kwargs",
        '{"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "kernel_sizes": [[3], [13], [7], [3]]}']


def test_candidates_alternate_within_rounds():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    timings = measure_interleaved(fns, warmup=1, repeats=3)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] * 3  # warm-up, then three alternating rounds
    assert all(len(t.times) == 3 for t in timings.values())


def test_the_clock_is_the_one_given_and_the_budget_stops_rounds():
    ticks = iter(range(1000))
    timings = measure_interleaved({"a": lambda: None, "b": lambda: None}, warmup=0, repeats=50,
                                  max_seconds=2.5, clock=lambda: float(next(ticks)))
    # every timed call spans exactly one tick of the fake clock; the third round passes 2.5 "s"
    assert timings["a"].times == [1.0, 1.0, 1.0] and timings["b"].median == 1.0


def test_channels_last_and_cpu_clock_are_recorded(tmp_path):
    js = tmp_path / "train.json"
    assert main(["bench", "train", *TINY, "--channels-last", "--clock", "cpu", "--json", str(js)]) == 0
    settings = json.loads(js.read_text())["settings"]
    assert settings["channels_last"] is True and settings["clock"] == "cpu"


def test_channels_last_needs_an_image_or_volume_model():
    kwargs = '{"spatial_dims": 1, "dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "kernel_sizes": [[3], [13], [7], [3]]}'
    assert main(["bench", "train", "--image-size", "16", "--batch-size", "2", "--repeats", "1", "--warmup", "0",
                 "--in-chans", "1", "--model-kwargs", kwargs, "--channels-last"]) == 2
