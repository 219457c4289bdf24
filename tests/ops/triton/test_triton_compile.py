"""The kernels compile for real GPUs (sm_80 / sm_90) with the ptxas in Triton's wheel — no GPU needed.

Compilation runs in a fresh process: this test session imported Triton under
``TRITON_INTERPRET=1``, which turns Triton's own helpers into interpreter-only functions. A fresh
cache directory makes sure the kernels are really compiled, not read from an earlier run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _compile(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    proc = subprocess.run(
        [sys.executable, "-m", "largekernel.ops.triton.compile_report", *args],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _assert_healthy(rows):
    assert rows
    for row in rows:
        assert row["spill_bytes"] == 0, f"register spills: {row}"
        assert 0 < row["registers"] <= 255, row


def test_default_tiles_compile_for_a100_without_spills(tmp_path):
    rows = _compile(tmp_path, "--arch", "80", "--dtype", "bf16", "--defaults-only")
    assert [r["kernel"] for r in rows] == ["forward", "grad_input", "grad_weight"]
    assert all(r["arch"] == "sm_80" and r["dtype"] == "bf16" for r in rows)
    _assert_healthy(rows)


def test_unknown_kernel_kind_is_rejected():
    from largekernel.ops.triton import compile_report
    from largekernel.ops.triton import configs as cfgs

    with pytest.raises(ValueError, match="kind"):
        compile_report.compile_kernel("backward", 80, "fp32", cfgs.TileConfig(1, 1, 16))


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_every_candidate_tile_compiles_without_spills(tmp_path, arch, dtype):
    _assert_healthy(_compile(tmp_path, "--arch", str(arch), "--dtype", dtype))
