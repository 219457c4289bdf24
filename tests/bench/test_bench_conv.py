"""Smoke tests of ``largekernel bench conv`` and the report helpers (tiny shapes, no timing asserts)."""

from __future__ import annotations

import argparse
import json

import pytest

from largekernel.bench import conv as bench_conv
from largekernel.bench import report


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_conv.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_conv_smoke_writes_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "conv.json", tmp_path / "sub" / "conv.png"
    args = _args(
        "--cases", "2d,1d",
        "--shapes", "2d=1x4x9x9,1d=1x4x33",
        "--ks", "3,5",
        "--repeats", "1",
        "--max-seconds", "0.5",
        "--matmul-size", "64",
        "--json", str(out_json),
        "--plot", str(out_png),
    )  # fmt: skip
    assert bench_conv.run(args) == 0
    payload = json.loads(out_json.read_text())
    assert {"benchmark", "machine", "settings", "matmul_gflops", "results", "ratios"} <= payload.keys()
    assert {"torch", "torch_threads", "cpu"} <= payload["machine"].keys()
    assert payload["matmul_gflops"] > 0
    rows = payload["results"]
    seen = {(r["case"], r["k"], r["impl"], r["mode"]) for r in rows}
    for k in (3, 5):
        for mode in ("fwd", "fwdbwd"):
            for impl in ("torch_nchw", "torch_cl", "engine_nchw", "engine_cl"):
                assert ("2d_1x4x9x9", k, impl, mode) in seen
            assert ("1d_1x4x33", k, "torch_nchw", mode) in seen
            assert ("1d_1x4x33", k, "torch_cl", mode) not in seen  # no channels-last in 1-D
    for r in rows:
        assert r["median_s"] > 0 and r["gflops"] > 0 and len(r["times"]) >= 1 and r["cpu_s"] >= 0
        assert r["flops"] == pytest.approx(
            2 * r["k"] ** r["dims"] * _prod(r["shape"]) * (3 if r["mode"] == "fwdbwd" else 1)
        )
    ratio_keys = {"case", "k", "mode", "engine_layout", "torch_best_layout", "vs_best", "vs_same"}
    assert payload["ratios"] and all(ratio_keys <= r.keys() for r in payload["ratios"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _prod(values):
    out = 1
    for v in values:
        out *= v
    return out


def test_quick_selection_and_overrides():
    cases = bench_conv._select_cases(_args("--quick"))
    assert [c.name for c in cases] == ["2d_56", "1d_4096", "3d_32"]
    assert cases[0].ks == (7, 13, 31) and cases[1].ks == (127,) and cases[2].ks == (7,)
    full = bench_conv._select_cases(_args("--cases", "2d"))
    assert [c.name for c in full] == ["2d_56", "2d_28"] and 51 in full[0].ks
    assert bench_conv._select_cases(_args("--cases", "3d", "--ks", "3"))[0].ks == (3,)


@pytest.mark.parametrize(
    "argv",
    [("--cases", "4d"), ("--ks", "a,b"), ("--ks", "0"), ("--shapes", "2d=1x2x3"), ("--shapes", "nonsense")],
)
def test_bad_options_raise_value_error(argv):
    with pytest.raises(ValueError):
        bench_conv._select_cases(_args(*argv))


def test_skips_runaway_baselines(tmp_path, monkeypatch):
    # a baseline predicted (from the previous K) to exceed --max-call-seconds is skipped, not run
    args = _args(
        "--cases", "1d", "--shapes", "1d=1x2x16", "--ks", "1,9", "--repeats", "1",
        "--max-call-seconds", "1e-12", "--matmul-size", "32", "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert bench_conv.run(args) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    k9 = [r for r in rows if r["k"] == 9 and r["impl"] != "native_gw"]
    assert k9 and all("skipped" in r and "median_s" not in r for r in k9)


def test_report_helpers(tmp_path):
    import torch

    path = report.write_json(tmp_path / "a" / "x.json", {"t": torch.tensor([1.0, 2.0]), "nan": float("nan"), "p": tmp_path})
    data = json.loads(path.read_text())
    assert data["t"] == [1.0, 2.0] and data["nan"] is None and data["p"] == str(tmp_path)
    assert list((tmp_path / "a").iterdir()) == [path]  # no temp file left behind
    with pytest.raises(TypeError):
        report.write_json(tmp_path / "y.json", [1, 2])
    table = report.format_table(["a", "bb"], [[1, None], [2.5, "x"]])
    assert table.splitlines()[0].split() == ["a", "bb"] and "-" in table.splitlines()[2]
    with pytest.raises(ValueError):
        report.format_table(["a"], [[1, 2]])
    png = report.plot_lines(
        tmp_path / "p.png", {"p1": {"s": ([1, 2], [1.0, None])}, "p2": {}}, xlabel="x", ylabel="y", logx=True, logy=True
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        report.plot_lines(tmp_path / "q.png", {}, xlabel="x", ylabel="y")


def test_cpu_clock_and_threads_option(tmp_path, monkeypatch):
    """``--clock cpu`` times every call with the process CPU clock; ``--threads`` is applied and restored."""
    import torch

    ticks = iter(range(10**6))
    seen_threads = []
    # a fake CPU clock that advances 0.5 s per reading: a timed call reads it at its start and
    # end, and the per-call CPU bookkeeping reads it twice in between, so each call takes 1.5 s
    monkeypatch.setattr(bench_conv.time, "process_time", lambda: 0.5 * next(ticks))
    real_make_fn = bench_conv._make_fn

    def make_fn(*a, **kw):
        seen_threads.append(torch.get_num_threads())
        return real_make_fn(*a, **kw)

    monkeypatch.setattr(bench_conv, "_make_fn", make_fn)
    before = torch.get_num_threads()
    out_json = tmp_path / "conv.json"
    args = _args("--cases", "2d", "--shapes", "2d=1x4x9x9", "--ks", "3", "--repeats", "3",
                 "--max-seconds", "100", "--matmul-size", "32", "--clock", "cpu", "--threads", "1",
                 "--json", str(out_json))
    assert bench_conv.run(args) == 0
    assert torch.get_num_threads() == before and seen_threads and set(seen_threads) == {1}
    payload = json.loads(out_json.read_text())
    assert payload["settings"]["clock"] == "cpu" and payload["settings"]["threads"] == 1
    conv_rows = [r for r in payload["results"] if r["impl"] != "native_gw"]
    assert len(conv_rows) == 8
    for r in conv_rows:
        assert r["median_s"] == pytest.approx(1.5) and len(r["times"]) == 3


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="--threads"):
        bench_conv.run(_args("--threads", "0"))
