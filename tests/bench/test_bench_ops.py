"""Smoke tests for `largekernel bench ops` (structure only: no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

from largekernel.bench import ops as bench_ops
from largekernel.cli import main

TINY = [
    "--quick", "--batch", "1", "--channels", "16", "--size", "10",
    "--batch-1d", "1", "--channels-1d", "4", "--length", "64", "--repeats", "1", "--warmup", "0",
]
ROW_KEYS = {
    "name", "dims", "description", "baseline", "input_shape", "status", "reason", "params",
    "forward_ms", "fwd_bwd_ms", "backward_ms", "peak_mem_mb",
    "forward_vs_baseline", "fwd_bwd_vs_baseline", "peak_mem_vs_baseline",
}


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_cli_json_and_plot(tmp_path):
    out, png = tmp_path / "ops.json", tmp_path / "ops.png"
    assert main(["bench", "ops", *TINY, "--json", str(out), "--plot", str(png)]) == 0
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "ops"
    assert {"settings", "results", "machine", "memory_method", "timing_method"} <= set(payload)
    assert payload["settings"]["size"] == 10 and payload["settings"]["length"] == 64
    rows = payload["results"]
    assert [r["name"] for r in rows] == [spec.name for spec in bench_ops.OPERATORS]
    for row in rows:
        assert ROW_KEYS <= set(row), row["name"]
        assert row["status"] in {"ok", "unavailable", "failed"}
        if row["status"] == "ok":
            assert row["reason"] is None
            assert row["params"] >= 0
            assert row["forward_ms"] > 0 and row["fwd_bwd_ms"] > 0 and row["backward_ms"] >= 0
            assert row["input_shape"] == ([1, 16, 10, 10] if row["dims"] == 2 else [1, 4, 64])
        else:
            assert isinstance(row["reason"], str) and row["reason"]
    # the operators owned by this module must run; so must the torch baselines
    ok = {r["name"] for r in rows if r["status"] == "ok"}
    assert {"dw7x7", "dw1d_k31", "sgconv", "longconv", "sgconv2d", "hyper_kernel"} <= ok
    # every ratio is the row's own figure over its dimensionality's baseline row (recomputed here;
    # the baseline row against itself would only check x / x == 1)
    base = {r["dims"]: r for r in rows if r["baseline"] and r["status"] == "ok"}
    assert set(base) == {1, 2}
    checked = 0
    for row in rows:
        if row["status"] != "ok" or row["baseline"]:
            continue
        b = base[row["dims"]]
        assert row["forward_vs_baseline"] == pytest.approx(row["forward_ms"] / b["forward_ms"])
        assert row["fwd_bwd_vs_baseline"] == pytest.approx(row["fwd_bwd_ms"] / b["fwd_bwd_ms"])
        checked += 1
    assert checked >= 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_operator_is_reported_not_raised(caplog):
    def broken(setting):
        raise ImportError("no module named largekernel.nn.not_written_yet")

    spec = bench_ops.OpSpec("ghost", 2, "missing", broken)
    setting = {"batch": 1, "channels": 2, "size": 4, "batch_1d": 1, "channels_1d": 2, "length": 8,
               "repeats": 1, "warmup": 0, "max_seconds": 1.0}
    row = bench_ops.benchmark_operator(spec, setting, measure_memory=False)
    assert row["status"] == "unavailable" and "not_written_yet" in row["reason"]
    assert row["forward_ms"] is None
    assert "ghost" in caplog.text

    def crashes(setting):
        return torch.nn.Linear(3, 3)  # wrong input layout: fails at run time

    row = bench_ops.benchmark_operator(bench_ops.OpSpec("bad", 2, "x", crashes), setting, measure_memory=False)
    assert row["status"] == "failed" and row["reason"]


def test_peak_memory_sees_a_known_allocation():
    n = 1 << 18  # 1 MiB of float32

    def fn():
        a = torch.ones(n)
        b = a * 2  # two live 1 MiB buffers
        return float(b[0])

    peak = bench_ops.peak_memory_bytes(fn)
    if peak is None:
        pytest.skip("profiler memory events unavailable in this torch build")
    assert peak >= 2 * 4 * n


def test_bad_arguments_exit_code():
    assert main(["bench", "ops", *TINY, "--ops", "dw7x7,nope"]) == 2
    assert main(["bench", "ops", *TINY[:-2], "--warmup", "-1"]) == 2
    assert main(["bench", "ops", *TINY, "--max-seconds", "0"]) == 2
