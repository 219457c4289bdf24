"""The compiled kernels under AddressSanitizer + UBSan: the engine's kernel property tests run clean.

The full run is ``bash scripts/sanitized-tests.sh`` (README); the default suite runs a bounded
selection through the same script so memory errors in the C kernels cannot go unnoticed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "sanitized-tests.sh"


def _asan_runtime() -> str | None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def _run(tmp_path, *pytest_args, extra_env=None):
    env = dict(os.environ)
    env["LARGEKERNEL_CACHE_DIR"] = str(tmp_path / "cache")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *pytest_args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.skipif(_asan_runtime() is None, reason="no C compiler with an AddressSanitizer runtime")
def test_kernel_property_tests_run_clean_under_asan_and_ubsan(tmp_path):
    proc = _run(
        tmp_path,
        "tests/ops/test_cpu_kernels.py",
        "tests/ops/test_grn.py",
        "-k", "large_kernels_match_reference or dilated or asymmetric or channels_last_gradient or parallel"
              " or matches_unfused_float64 or zero_channel",
        "tests/ops/test_sanitizer_probe.py",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    # the sanitized library was really built and used (its own cache entry)
    libs = list((tmp_path / "cache" / "cpu_kernels").glob("lk_dwconv-asan-*.so"))
    assert libs, "the sanitized kernel library was not built"


@pytest.mark.skipif(_asan_runtime() is None, reason="no C compiler with an AddressSanitizer runtime")
def test_sanitizer_catches_an_out_of_bounds_write(tmp_path):
    """The harness is not vacuous: a heap overflow in a sanitized library aborts the run."""
    # -s: pytest's output capture would swallow the report of a process that ASan aborts
    proc = _run(tmp_path, "-s", "tests/ops/test_sanitizer_probe.py", extra_env={"LK_SANITIZER_PROBE_OVERFLOW": "1"})
    assert proc.returncode != 0
    assert "heap-buffer-overflow" in proc.stderr + proc.stdout
