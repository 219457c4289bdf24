"""The project's headline claim: `largekernel train` with no arguments reaches >= 97 % test
accuracy on digits (slow: a full default run; run with `pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_default_train_reaches_97_percent(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "largekernel.cli", "train", "--output", str(tmp_path / "run"),
                           "--quiet"], capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    print(f"default run: test top-1 {100 * metrics['final']['top1']:.2f} %, wall {wall:.0f} s, "
          f"train loop {metrics['train_seconds']:.0f} s")
    assert metrics["data"]["spec"] == "digits" and metrics["model"]["name"].startswith("unireplknet")
    assert metrics["final"]["top1"] >= 0.97
    # the deploy (reparameterised) checkpoint gives the same accuracy
    out = subprocess.run([sys.executable, "-m", "largekernel.cli", "evaluate",
                          str(tmp_path / "run" / "model.safetensors"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip())["top1"] == pytest.approx(metrics["final"]["top1"], abs=1e-9)
