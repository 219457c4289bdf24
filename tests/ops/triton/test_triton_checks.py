"""Bad input for the Triton kernels: clear errors, `supports` answers, no Triton import on CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from largekernel.ops import triton as lkt
from largekernel.ops.triton import checks


def _x(*shape, dtype=torch.float32):
    return torch.randn(shape).to(dtype)


def test_supports_accepts_depthwise_with_multiplier_and_all_dtypes():
    for dtype in checks.SUPPORTED_DTYPES:
        assert lkt.supports(_x(2, 4, 8, 8, dtype=dtype), (8, 1, 5, 5), (1, 1), (1, 1), dtype)
    assert lkt.supports(_x(1, 3, 20), (3, 1, 31), 2, 3, torch.float32)
    assert lkt.supports(_x(1, 3, 4, 4, 4), (6, 1, 3, 3, 3), 1, 1, torch.bfloat16)


@pytest.mark.parametrize(
    "x,weight_shape,stride,dilation,dtype,words",
    [
        (_x(2, 4, 8, 8), (4, 1, 3, 3), 1, 1, torch.float64, "dtype"),
        (_x(2, 4, 8, 8), (4, 2, 3, 3), 1, 1, None, "depthwise"),  # groups = C/2
        (_x(2, 4, 8, 8), (6, 1, 3, 3), 1, 1, None, "depthwise"),  # 6 not a multiple of 4
        (_x(2, 4, 8, 8), (4, 1, 3), 1, 1, None, "dims"),
        (_x(2, 4, 8, 8), (4, 1, 3, 3), (1, 0), 1, None, "stride"),
        (_x(2, 4, 8, 8), (4, 1, 3, 3), 1, (1, 1, 1), None, "dilation"),
        (_x(4, 8), (4, 1, 3), 1, 1, None, "dims"),
        (torch.zeros(()).expand(1, 1, 2**16, 2**15 + 1), (1, 1, 3, 3), 1, 1, None, "32-bit"),
        (torch.empty(1, 70000, 2, device="meta"), (70000, 1, 3), 1, 1, None, "channels"),
    ],
)
def test_unsupported_reasons_name_the_problem(x, weight_shape, stride, dilation, dtype, words):
    reason = lkt.unsupported_reason(x, weight_shape, stride, dilation, dtype)
    assert reason is not None and words in reason
    assert not lkt.supports(x, weight_shape, stride, dilation, dtype)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton (third-party) is not installed")
class _Misaligned(torch.Tensor):
    """A tensor whose storage pointer claims to be off by 2 bytes (torch itself never makes one)."""

    def data_ptr(self):
        return super().data_ptr() + 2


def test_misaligned_storage_is_refused():
    x = torch.Tensor._make_subclass(_Misaligned, torch.randn(1, 2, 5, 5))
    assert "aligned" in lkt.unsupported_reason(x, (2, 1, 3, 3), 1, 1, torch.float32)
    with pytest.raises(ValueError, match="aligned"):
        lkt.depthwise_forward(x, torch.randn(2, 1, 3, 3), (1, 1), (1, 1), (1, 1))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x, w = _x(1, 2, 6, 6), torch.randn(2, 1, 3, 3)
    assert "TRITON_INTERPRET" in lkt.unsupported_reason(x, w.shape, 1, 1, x.dtype)
    assert not lkt.is_available("cpu")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        lkt.depthwise_forward(x, w, (1, 1), (1, 1), (1, 1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert lkt.is_available("cpu")
    assert not lkt.is_available("meta")


def test_meta_device_is_refused_before_any_launch():
    x = torch.empty(1, 2, 6, 6, device="meta")
    w = torch.empty(2, 1, 3, 3, device="meta")
    with pytest.raises(RuntimeError, match="meta"):
        lkt.depthwise_forward(x, w, (1, 1), (1, 1), (1, 1))


@pytest.mark.parametrize(
    "call,exc,words",
    [
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(2, 1, 3, 3).double(), (1, 1), (1, 1), (1, 1)),
         TypeError, "weight must be float32"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(2, 1, 3, 3).half(), (1, 1), (1, 1), (1, 1)),
         TypeError, "must match"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.empty(2, 1, 3, 3, device="meta"), 1, 1, 1),
         ValueError, "one device"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(3, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
         ValueError, "depthwise"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(2, 1, 3, 3), (0, 1), (1, 1), (1, 1)),
         ValueError, "stride"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(2, 1, 3, 3), (1, 1), (-1, 1), (1, 1)),
         ValueError, "padding"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 2, 2), torch.randn(2, 1, 5, 5), (1, 1), (0, 0), (1, 1)),
         ValueError, "smaller than the dilated kernel"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), torch.randn(2, 1, 3), (1,), (1,), (1,)),
         ValueError, "dims"),
        (lambda: lkt.depthwise_grad_input(_x(1, 2, 5, 5), torch.randn(2, 1, 3, 3), (1, 2, 6, 6), 1, 1, 1),
         ValueError, "grad_out must have shape"),
        (lambda: lkt.depthwise_grad_weight(_x(1, 2, 6, 6), _x(1, 3, 6, 6), (3, 3), 1, 1, 1),
         ValueError, "multiple"),
        (lambda: lkt.depthwise_grad_weight(_x(1, 2, 6, 6), _x(1, 2, 5, 6), (3, 3), 1, 1, 1),
         ValueError, "grad_out must have shape"),
        (lambda: lkt.depthwise_grad_weight("x", _x(1, 2, 5, 6), (3, 3), 1, 1, 1), ValueError, "x must be"),
        (lambda: lkt.depthwise_forward(torch.zeros(()).expand(1, 1, 2**15, 2**15), torch.randn(4, 1, 1, 1),
                                       (1, 1), (0, 0), (1, 1)), ValueError, "output .* too large"),
        (lambda: lkt.depthwise_forward(_x(1, 2, 6, 6), "w", (1, 1), (1, 1), (1, 1)), TypeError, "weight must be"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_nothing_imports_triton_on_a_cpu_only_path():
    """`import largekernel`, the engine on CPU, and even this package's checks never import Triton."""
    code = (
        "import sys, torch, largekernel, largekernel.ops\n"
        "from largekernel.ops import triton as lkt, triton_dispatch\n"
        "from largekernel.ops.validation import normalize_conv_args\n"
        "x, w = torch.randn(1, 4, 9, 9), torch.randn(4, 1, 7, 7)\n"
        "args = normalize_conv_args(x, w, None, 1, 3, 1, 4)\n"
        "assert not triton_dispatch.triton_plan_ok(x, tuple(w.shape), args)\n"
        "assert not lkt.is_available('cpu') and not lkt.supports(x, w.shape, 1, 1, x.dtype)\n"
        "largekernel.ops.conv(x, w, padding='same', groups=4)\n"
        "class Probe:  # what explain() hands the dispatcher for a CUDA plan\n"
        "    shape, dtype, device = x.shape, x.dtype, torch.device('cuda')\n"
        "ok = triton_dispatch.triton_plan_ok(Probe(), tuple(w.shape), args)\n"
        "assert ok == (torch.cuda.is_available() and __import__('importlib').util.find_spec('triton') is not None)\n"
        "if not torch.cuda.is_available():\n"
        "    assert 'triton' not in sys.modules, sorted(m for m in sys.modules if 'triton' in m)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
