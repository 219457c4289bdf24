"""`bench conv/train --device cuda`: a clear one-line error without a GPU; the sweep's logic on CPU."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from largekernel.bench import cuda_conv
from largekernel.cli import main

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")


@pytest.mark.parametrize("argv", [["bench", "conv", "--device", "cuda", "--quick"],
                                  ["bench", "train", "--device", "cuda", "--quick"]])
def test_cuda_benchmarks_fail_cleanly_without_a_gpu(argv, caplog, capsys):
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no CUDA device" in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback
    assert "Traceback" not in capsys.readouterr().err


def test_case_selection():
    cases = cuda_conv.select_cases("2d,1d", None, quick=False)
    assert [c.name for c in cases] == ["2d_384x32", "2d_64x56", "1d_4096"]
    assert cases[0].ks == (3, 5, 7, 9, 13, 17, 21, 27, 31) and max(cases[2].ks) == 1023
    assert cuda_conv.select_cases("2d", "5,9", quick=True)[0].ks == (5, 9)
    for bad in (("4d", None), ("2d", "x"), ("2d", "0")):
        with pytest.raises(ValueError):
            cuda_conv.select_cases(bad[0], bad[1], quick=False)


def test_full_run_writes_json_and_plot_on_cpu(tmp_path, monkeypatch):
    """run_on(): the whole `bench conv --device cuda` flow on a tiny CPU case via the interpreter."""
    import argparse

    monkeypatch.setitem(cuda_conv.CUDA_CASES, "2d", [cuda_conv.CudaCase("tiny", (1, 2, 5, 5), (3,))])
    args = argparse.Namespace(dtype="float32", cases="2d", ks=None, quick=False, repeats=1,
                              json=str(tmp_path / "g.json"), plot=str(tmp_path / "g.png"))
    assert cuda_conv.run_on(args, torch.device("cpu"), impls=("torch", "triton", "engine")) == 0
    payload = json.loads((tmp_path / "g.json").read_text())
    assert payload["peaks"]["measured_copy_bytes_per_s"] > 0 and payload["peaks"]["spec_fp32_flops"] is None
    rows = payload["results"]
    assert {(r["dtype"], r["impl"], r["mode"]) for r in rows} == {
        (d, i, m) for d in ("float32", "bfloat16") for i in ("torch", "triton", "engine") for m in ("fwd", "fwdbwd")
    }
    assert all("median_s" in r for r in rows), [r.get("skipped") for r in rows]
    fwd = next(r for r in rows if (r["dtype"], r["impl"], r["mode"]) == ("float32", "triton", "fwd"))
    assert fwd["flops"] == 2 * 9 * 2 * 25 and fwd["bytes"] == 4 * 2 * 2 * 25
    times = {(r["dtype"], r["impl"], r["mode"]): r["median_s"] for r in rows}
    assert len(payload["ratios"]) == 8  # (triton, engine) x (fwd, fwdbwd) x 2 dtypes
    for r in payload["ratios"]:
        want = times[(r["dtype"], "torch", r["mode"])] / times[(r["dtype"], r["impl"], r["mode"])]
        assert r["speedup_vs_torch_best"] == pytest.approx(want)
    assert (tmp_path / "g.png").stat().st_size > 1000
    args.dtype = "float64"
    with pytest.raises(ValueError, match="dtype"):
        cuda_conv.run_on(args, torch.device("cpu"))


def test_model_time_only_for_known_gpus():
    case = cuda_conv.CudaCase("c", (8, 64, 56, 56), (13,))
    assert cuda_conv._model_us(case, 13, torch.float32, "fwd", None) is None
    fwd = cuda_conv._model_us(case, 13, torch.float32, "fwd", "NVIDIA A100-SXM4-80GB")
    both = cuda_conv._model_us(case, 13, torch.float32, "fwdbwd", "NVIDIA A100-SXM4-80GB")
    assert 0 < fwd < both
