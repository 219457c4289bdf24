"""Smoke test of `largekernel bench train` at a tiny size (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from largekernel.cli import main

TINY = ["--quick", "--image-size", "16", "--batch-size", "4", "--repeats", "1", "--warmup", "0",
        "--model-kwargs",
        '{"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "kernel_sizes": [[3], [13], [7], [3]]}']


def test_bench_train_writes_json_and_plot(tmp_path):
    js, png = tmp_path / "train.json", tmp_path / "train.png"
    assert main(["bench", "train", *TINY, "--json", str(js), "--plot", str(png)]) == 0
    payload = json.loads(js.read_text())
    assert payload["benchmark"] == "train"
    modes = {r["mode"]: r for r in payload["results"]}
    assert set(modes) == {"torch", "engine"}
    for r in modes.values():
        assert r["median_s"] > 0 and len(r["times_s"]) == 1
        assert r["images_per_s"] == pytest.approx(4 / r["median_s"])
    assert payload["speedup_engine_vs_torch"] == pytest.approx(
        modes["engine"]["images_per_s"] / modes["torch"]["images_per_s"])
    assert payload["settings"]["model_kwargs"]["in_chans"] == 3
    assert png.is_file() and png.stat().st_size > 0


@pytest.mark.parametrize("extra", [["--modes", "gpu"], ["--batch-size", "0"], ["--model", "nope"],
                                   ["--model-kwargs", "[1]"]])
def test_bench_train_bad_arguments(extra):
    assert main(["bench", "train", *TINY, *extra]) == 2


def test_bench_train_breakdown_reports_the_roofline_gap(tmp_path):
    js = tmp_path / "train.json"
    assert main(["bench", "train", *TINY, "--modes", "engine", "--breakdown", "--json", str(js)]) == 0
    (result,) = json.loads(js.read_text())["results"]
    b = result["breakdown"]
    peak = b["peak"]
    # the roofline time is recomputed from its parts: FLOPs at the matmul peak plus bytes at the bandwidth
    expected = b["flops"] / (peak["matmul_gflops"] * 1e9) + b["bytes"] / (peak["bandwidth_gbs"] * 1e9)
    assert b["roofline_s"] == pytest.approx(expected)
    assert b["gap"] == pytest.approx(b["step_s"] / b["roofline_s"])
    kinds = {k["kind"] for k in b["by_kind"]}
    assert any("13x13" in k for k in kinds) and "BatchNorm2d" in kinds
    import largekernel

    model = largekernel.create_model("unireplknet_a", num_classes=10, dims=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                     kernel_sizes=[[3], [13], [7], [3]])
    assert b["flops"] == pytest.approx(6 * largekernel.count_macs(model, (4, 3, 16, 16)))
