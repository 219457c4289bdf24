"""`largekernel bench accelerate` at a tiny size: what it writes is consistent with what it timed.

No timing assertions (the machine is shared): the medians and ratios in the JSON are recomputed
from the raw times it also writes, and the accelerated copy must really run convolutions on the
engine while the plain copy runs none.
"""

from __future__ import annotations

import json
import logging
import statistics

import pytest
import torch

from largekernel.bench import accelerate as bench_accelerate
from largekernel.cli import main
from largekernel.nn.acceleration import accelerate, to_torch_convs


def test_bench_accelerate_writes_consistent_json_and_plot(tmp_path):
    js, png = tmp_path / "acc.json", tmp_path / "acc.png"
    argv = ["bench", "accelerate", "--models", "unireplknet_a", "--image-size", "32", "--settings",
            "infer1,train8", "--rounds", "2", "--threads", "1", "--json", str(js), "--plot", str(png)]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    payload = json.loads(js.read_text())
    assert payload["benchmark"] == "accelerate" and payload["image_size"] == 32 and payload["rounds"] == 2
    assert payload["threads"] == 1
    results = payload["results"]
    assert [(r["model"], r["setting"]) for r in results] == [("unireplknet_a", "infer1"), ("unireplknet_a", "train8")]
    for r in results:
        assert len(r["times"]["torch"]) == len(r["times"]["engine"]) == 2
        torch_ms = 1e3 * statistics.median(r["times"]["torch"])
        engine_ms = 1e3 * statistics.median(r["times"]["engine"])
        assert r["torch_ms"] == pytest.approx(torch_ms) and r["engine_ms"] == pytest.approx(engine_ms)
        assert r["speedup"] == pytest.approx(torch_ms / engine_ms)
        assert r["converted_convs"] > 0  # UniRepLKNet's large depthwise kernels go to the engine
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_converted_count_is_the_number_of_engine_convs():
    torch.manual_seed(0)
    plain = to_torch_convs(bench_accelerate._build("unireplknet_a"))
    assert not any(type(m).__module__ == "largekernel.nn.conv" for m in plain.modules())
    expected = sum(type(m).__module__ == "largekernel.nn.conv" for m in accelerate(plain, inplace=False).modules())
    result = bench_accelerate.compare("unireplknet_a", "infer1", 32, 1)
    assert result["converted_convs"] == expected > 0


def test_default_model_lists():
    quick = bench_accelerate.default_models(quick=True)
    assert quick == [bench_accelerate.TIMM_MODELS[0], "unireplknet_a"]  # timm is installed here
    assert bench_accelerate.default_models(quick=False) == [*bench_accelerate.TIMM_MODELS,
                                                            *bench_accelerate.OWN_MODELS]


@pytest.mark.parametrize("extra, needle", [
    (["--threads", "0"], "--threads must be >= 1"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--settings", "infer1,infer2"], "--settings: unknown ['infer2']"),
])
def test_bench_accelerate_bad_arguments(extra, needle, caplog):
    caplog.set_level(logging.ERROR, logger="largekernel")
    assert main(["bench", "accelerate", "--models", "unireplknet_a", *extra]) == 2
    assert any(needle in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
