"""Regression tests for PyTorch paths the engine must never route work to (issue 11).

PyTorch's channels-last 3-D grouped weight gradient with stride >= 2 returns garbage in float32
(different on every run, sometimes NaN) and can corrupt the heap; plain ``F.conv3d`` on NCDHW
tensors is correct. Heap corruption can abort or segfault the process, so every case runs in a
subprocess, with and without the compiled kernels (``LARGEKERNEL_DISABLE_NATIVE=1``), several
times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CASES = {
    # the examples: channel multiplier 2 (16 filters on 8 channels), stride 2
    "3d-mult2-stride2-asym": dict(x=(1, 8, 6, 9, 7), w=(16, 1, 7, 5, 5), groups=8, stride=2, padding=(3, 2, 2)),
    "3d-mult2-stride2": dict(x=(1, 8, 6, 6, 6), w=(16, 1, 7, 7, 7), groups=8, stride=2, padding=3),
    # plain depthwise fails the same way once the compiled kernels are off
    "3d-dw-stride2": dict(x=(1, 8, 6, 6, 6), w=(8, 1, 7, 7, 7), groups=8, stride=2, padding=3),
    # two inputs per group, small kernel (PyTorch autograd path), stride 2
    "3d-ipg2-k3-stride2": dict(x=(2, 8, 7, 6, 5), w=(8, 2, 3, 3, 3), groups=4, stride=2, padding=1),
    # grouped 1x1x1 conv with bias, stride 2, outputs that read only padding (inference and training)
    "3d-1x1x1-bias-padonly": dict(x=(2, 8, 5, 6, 7), w=(8, 2, 1, 1, 1), groups=4, stride=2, padding=(0, 1, 1), bias=True),
    "2d-1x1-bias-padonly": dict(x=(2, 8, 9, 7), w=(16, 2, 1, 1), groups=4, stride=2, padding=(1, 2), bias=True),
}

SCRIPT = r"""
import json, sys, torch
import torch.nn.functional as F
from largekernel import ops
for name, case in json.loads(sys.argv[1]).items():
  print(name, flush=True)
  conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[len(case["x"])]
  worst = {}
  for trial in range(4):
      torch.manual_seed(trial)
      for layout in ("contiguous", "channels_last"):
          x = torch.randn(case["x"])
          if layout == "channels_last":
              x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
          x.requires_grad_()
          w = torch.randn(case["w"], requires_grad=True)
          b = torch.randn(case["w"][0], requires_grad=True) if case.get("bias") else None
          args = (case["stride"], case["padding"], 1, case["groups"])
          with torch.no_grad():
              y_inf = ops.conv(x, w, b, *args)
          y = ops.conv(x, w, b, *args)
          g = torch.randn(y.shape)
          grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], g)
          xr, wr = x.detach().double().contiguous().requires_grad_(), w.detach().double().requires_grad_()
          br = b.detach().double().requires_grad_() if b is not None else None
          ref = conv(xr, wr, br, *args)
          rgrads = torch.autograd.grad(ref, [t for t in (xr, wr, br) if t is not None], g.double())
          for what, a, r in [("y", y, ref), ("y_inference", y_inf, ref)] + list(zip(("gx", "gw", "gb"), grads, rgrads)):
              err = ((a.double() - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()
              worst[what] = max(worst.get(what, 0.0), err if err == err else float("inf"))
  print(json.dumps({name: worst}), flush=True)
"""


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "no-native"])
def test_engine_never_uses_broken_pytorch_paths(native):
    env = dict(os.environ)
    if not native:
        env["LARGEKERNEL_DISABLE_NATIVE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env, capture_output=True, text=True, timeout=600
    )
    last = proc.stdout.strip().splitlines()[-1:] or ["(none)"]
    assert proc.returncode == 0, f"crashed in case {last[0]} (rc={proc.returncode}): {proc.stderr[-2000:]}"
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    assert set(results) == set(CASES)
    for name, worst in results.items():
        assert max(worst.values()) < 1e-4, (name, worst)
