"""Argument validation, dtypes, explain(), autotuning and forcing of the convolution engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import largekernel.ops as ops
from largekernel.ops import conv, explain, force_impl
from largekernel.ops.fft import fast_fft_size


def _dw(c=4, k=13, dtype=torch.float32):
    return torch.randn(2, c, 16, 15, dtype=dtype), torch.randn(c, 1, k, k, dtype=dtype)


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "xs, ws, kw, exc, match",
    [
        ((2, 4, 8, 8), (4, 1, 3), {}, ValueError, "input must have 3 dimensions"),
        ((2, 4, 8, 8, 8, 8), (4, 1, 3, 3), {}, ValueError, "input must have 4 dimensions"),
        ((2, 4, 8, 8), (4, 1, 3, 3, 3, 3), {}, ValueError, "weight must have 3, 4 or 5"),
        ((2, 6, 8, 8), (4, 3, 3, 3), dict(groups=4), ValueError, "in_channels"),
        ((2, 6, 8, 8), (6, 2, 3, 3), dict(groups=4), ValueError, "out_channels"),
        ((2, 6, 8, 8), (6, 2, 3, 3), dict(groups=2), ValueError, "expected input with 4 channels"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=0), ValueError, "groups"),
        ((2, 4, 8, 8), (4, 1, 11, 3), dict(groups=4), ValueError, "kernel size can't be greater"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, stride=0), ValueError, "stride must be positive"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, stride=(1, -1)), ValueError, "stride must be positive"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, dilation=0), ValueError, "dilation must be positive"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, padding=-1), ValueError, "padding must be non-negative"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, padding="full"), ValueError, "padding must be"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, padding=(1, 1, 1)), ValueError, "padding must be"),
        ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, padding="same", stride=2), ValueError, "strided"),
    ],
)
def test_bad_arguments(xs, ws, kw, exc, match):
    with pytest.raises(exc, match=match):
        conv(torch.randn(xs), torch.randn(ws), **kw)


def test_bad_dtypes_devices_and_bias():
    x, w = _dw()
    with pytest.raises(TypeError, match="should be the same"):
        conv(x, w.double(), groups=4)
    with pytest.raises(TypeError, match="floating point"):
        conv(x.long(), w.long(), groups=4)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        conv(x, w, torch.randn(3), groups=4)
    with pytest.raises(TypeError, match="bias dtype"):
        conv(x, w, torch.randn(4, dtype=torch.float64), groups=4)
    with pytest.raises(ValueError, match="on meta"):
        conv(x, w.to("meta"), groups=4)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        conv(x.numpy(), w, groups=4)


@pytest.mark.parametrize("xs, ws, kw, match", [
    ((2, 6, 8, 8), (6, 2, 3, 3), dict(groups=2), "channels"),
    ((2, 4, 8, 8), (4, 1, 3, 3), dict(groups=4, stride=2, padding="same"), "padding='same'"),
])
def test_engine_rejects_what_torch_rejects_with_a_clear_error(xs, ws, kw, match):
    # the engine's errors are for inputs PyTorch rejects too, but name the argument instead of
    # failing deep inside an implementation
    x, w = torch.randn(xs), torch.randn(ws)
    with pytest.raises(RuntimeError):
        F.conv2d(x, w, **kw)
    with pytest.raises(ValueError, match=match):
        conv(x, w, **kw)


# ----------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [3, 13])
def test_half_dtypes_close_to_float64(dtype, k):
    x, w = _dw(k=k)
    b = torch.randn(4)
    xh, wh, bh = (t.to(dtype).requires_grad_() for t in (x, w, b))
    y = conv(xh, wh, bh, padding="same", groups=4)
    assert y.dtype == dtype
    xr, wr, br = (t.to(dtype).double().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(xr, wr, br, padding="same", groups=4)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    assert (y.double() - ref).norm() / ref.norm() < tol
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, (xh, wh, bh), g.to(dtype))
    rgrads = torch.autograd.grad(ref, (xr, wr, br), g)
    for a, r in zip(grads, rgrads):
        assert a.dtype == dtype
        assert (a.double() - r).norm() / r.norm() < tol


def test_float64_and_unbatched_input():
    x, w = _dw(dtype=torch.float64)
    y = conv(x[0], w, padding=(6, 5), groups=4)
    torch.testing.assert_close(y, F.conv2d(x[0], w, padding=(6, 5), groups=4))
    assert y.dim() == 3


def test_no_grad_path_and_inference():
    x, w = _dw(k=17)
    with torch.no_grad():
        y = conv(x, w, padding=8, groups=4)
    assert not y.requires_grad
    torch.testing.assert_close(y, F.conv2d(x, w, padding=8, groups=4), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------- explain
def test_explain_is_readable_and_consistent():
    plan = explain((8, 64, 56, 56), (64, 1, 31, 31), padding=15, groups=64)
    text = str(plan)
    for word in ("forward", "grad_input", "grad_weight", "reason"):
        assert word in text
    assert plan.forward in ops.dispatch.FORWARD_IMPLS
    assert plan.grad_weight in ops.dispatch.GRAD_WEIGHT_IMPLS
    # the same decision conv() makes for real tensors of that shape
    x = torch.randn(1, 8, 40, 40, requires_grad=True)
    w = torch.randn(8, 1, 31, 31, requires_grad=True)
    real = ops.dispatch.choose_plan(x, w, ops.validation.normalize_conv_args(x, w, None, 1, 15, 1, 8), True)
    assert explain((1, 8, 40, 40), (8, 1, 31, 31), padding=15, groups=8) == real


def test_explain_tables():
    # large depthwise kernel: custom backward, flipped-kernel grad_input
    big = explain((8, 64, 56, 56), (64, 1, 17, 17), padding=8, groups=64)
    assert not big.uses_autograd and big.grad_input == big.forward
    # no grad: no backward planned
    assert explain((8, 64, 56, 56), (64, 1, 17, 17), padding=8, groups=64, requires_grad=False).grad_weight == "none"
    # small dense conv stays on PyTorch autograd
    assert explain((2, 16, 32, 32), (32, 16, 3, 3), padding=1).uses_autograd
    # very long dense 1-D kernel: FFT
    assert explain((2, 8, 4096), (8, 8, 1023), padding="same").forward == "fft"
    # half precision on CPU is computed in float32
    assert explain((2, 8, 32, 32), (8, 1, 13, 13), groups=8, dtype=torch.bfloat16).compute_dtype == torch.float32
    # unbatched and even-kernel 'same'
    assert explain((8, 32, 32), (8, 1, 8, 8), padding="same", groups=8).forward in ops.dispatch.FORWARD_IMPLS
    with pytest.raises(ValueError, match="groups"):
        explain((8, 64, 56, 56), (64, 1, 3, 3), groups=3)


def test_force_impl_validation_and_nesting():
    with pytest.raises(ValueError, match="forward must be one of"):
        with force_impl(forward="cuda-magic"):
            pass
    with pytest.raises(ValueError, match="both be 'autograd'"):
        with force_impl(grad_input="autograd", grad_weight="fft"):
            pass
    with force_impl(forward="fft"):
        with force_impl(grad_weight="aten"):
            p = explain((2, 4, 16, 16), (4, 1, 9, 9), padding=4, groups=4)
            assert (p.forward, p.grad_weight) == ("fft", "aten")
        assert explain((2, 4, 16, 16), (4, 1, 9, 9), padding=4, groups=4).forward == "fft"
    assert "forced" not in explain((2, 4, 16, 16), (4, 1, 9, 9), padding=4, groups=4).reason


# ----------------------------------------------------------------------------------------- autotune
def test_autotune_caches_and_deterministic_disables():
    ops.clear_autotune_cache()
    old = ops.get_autotune()
    ops.set_autotune(True)
    try:
        x = torch.randn(1, 4, 20, 20, requires_grad=True)
        w = torch.randn(4, 1, 11, 11, requires_grad=True)
        with ops.deterministic():
            conv(x, w, padding=5, groups=4)
        assert not ops.dispatch._TUNE_CACHE
        y = conv(x, w, padding=5, groups=4)
        assert len(ops.dispatch._TUNE_CACHE) == 1
        plan = next(iter(ops.dispatch._TUNE_CACHE.values()))
        assert plan.autotuned and "autotuned" in plan.reason
        assert explain((1, 4, 20, 20), (4, 1, 11, 11), padding=5, groups=4) == plan
        y.sum().backward()
        torch.testing.assert_close(y, F.conv2d(x, w, padding=5, groups=4), rtol=1e-4, atol=1e-4)
        conv(x, w, padding=5, groups=4)
        assert len(ops.dispatch._TUNE_CACHE) == 1  # cached, not re-tuned
    finally:
        ops.set_autotune(old)
        ops.clear_autotune_cache()
    with pytest.raises(TypeError):
        ops.set_autotune("yes")


def test_fast_fft_size():
    for n in [1, 7, 11, 97, 127, 4606]:
        m = fast_fft_size(n)
        assert m >= n
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        assert r == 1
        assert all(fast_fft_size(k) > k - 1 for k in range(n, m + 1))
    with pytest.raises(ValueError):
        fast_fft_size(0)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x, w = _dw(k=17)
    y = conv(x.cuda(), w.cuda(), padding=8, groups=4)
    torch.testing.assert_close(y.cpu(), F.conv2d(x, w, padding=8, groups=4), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "impl", [None, ("fft", "fft", "fft"), ("kernels", "kernels", "kernels"), ("fft", "autograd", "autograd")]
)
def test_empty_batch(impl):
    x = torch.randn(0, 4, 20, 20, requires_grad=True)
    w = torch.randn(4, 1, 13, 13, requires_grad=True)
    if impl is None:
        y = conv(x, w, padding=6, groups=4)
    else:
        with force_impl(*impl):
            y = conv(x, w, padding=6, groups=4)
    assert y.shape == F.conv2d(x, w, padding=6, groups=4).shape
    y.sum().backward()
    assert torch.count_nonzero(w.grad) == 0 and x.grad.shape == x.shape


def test_without_compiled_kernels(monkeypatch):
    from largekernel.ops import native

    monkeypatch.setattr(native, "_KERNELS_CACHE", [None])
    plan = explain((2, 8, 30, 30), (8, 1, 17, 17), padding=8, groups=8)
    assert "kernels" not in (plan.forward, plan.grad_input, plan.grad_weight)
    x = torch.randn(2, 8, 30, 30, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 1, 17, 17, dtype=torch.float64, requires_grad=True)
    y = conv(x, w, padding=8, groups=8)
    gx, gw = torch.autograd.grad(y.sum(), (x, w))
    ref = F.conv2d(x, w, padding=8, groups=8)
    rgx, rgw = torch.autograd.grad(ref.sum(), (x, w))
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(gx, rgx)
    torch.testing.assert_close(gw, rgw)
    # forcing an unavailable path is an error, not a silent fallback
    from largekernel.ops import ForcedImplementationError

    with force_impl(forward="kernels"), pytest.raises(ForcedImplementationError, match="forward='kernels'"):
        conv(x, w, padding=8, groups=8)
    with force_impl(grad_weight="kernels"), pytest.raises(ForcedImplementationError, match="grad_weight"):
        torch.autograd.grad(conv(x, w, padding=8, groups=8).sum(), (x, w))


def test_failing_compiled_kernel_falls_back(monkeypatch, caplog):
    from largekernel.ops import autograd, native

    class Broken:
        @staticmethod
        def depthwise_grad_weight(*a, **k):
            raise RuntimeError("boom")

        @staticmethod
        def depthwise_forward(*a, **k):
            raise RuntimeError("boom")

        @staticmethod
        def supports(*a, **k):
            return True

    monkeypatch.setattr(native, "_KERNELS_CACHE", [Broken])
    monkeypatch.setattr(autograd, "_WARNED", set())
    x = torch.randn(1, 4, 20, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    from largekernel.ops import ForcedImplementationError, record_impls

    assert explain(x.shape, w.shape, padding=4, groups=4, dtype=x.dtype).grad_weight == "kernels"
    with record_impls() as steps:
        y = conv(x, w, padding=4, groups=4)
        gw = torch.autograd.grad(y.sum(), w)[0]
    ref = F.conv2d(x, w, padding=4, groups=4)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(gw, torch.autograd.grad(ref.sum(), w)[0])
    assert "boom" in caplog.text
    # the planned compiled weight gradient failed, so another implementation really ran
    assert [s.impl for s in steps if s.stage == "grad_weight"] == ["fft"]
    # ... but a forced one raises instead of hiding the failure
    with force_impl("kernels", "kernels", "kernels"), pytest.raises(ForcedImplementationError, match="boom"):
        conv(x, w, padding=4, groups=4)


def test_autocast_bf16_matches_pytorch_autocast():
    """The engine follows autocast's conv rule (inputs cast to the autocast dtype), like F.conv2d."""
    from torch.nn import functional as F

    from largekernel.ops import conv as engine_conv

    torch.manual_seed(0)
    x = torch.randn(2, 8, 20, 20, requires_grad=True)
    w = torch.randn(8, 1, 13, 13, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = engine_conv(x, w, padding=6, groups=8)
        ref = F.conv2d(x, w, padding=6, groups=8)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert w.grad.is_contiguous()  # DDP buckets expect the weight's strides


_AUTOTUNE_PROBE = r"""
import importlib, json, os
import torch
from largekernel import ops
from largekernel.ops import dispatch

first = ops.get_autotune()
x = torch.randn(1, 4, 20, 20, requires_grad=True)
ops.conv(x, torch.randn(4, 1, 11, 11, requires_grad=True), padding=5, groups=4)
tuned = len(dispatch._TUNE_CACHE)
seen = {}
for value in ["1", "true", "YES", "on", "0", "false", "", "no"]:
    os.environ["LARGEKERNEL_AUTOTUNE"] = value
    seen[value] = importlib.reload(dispatch).get_autotune()
del os.environ["LARGEKERNEL_AUTOTUNE"]
seen["unset"] = importlib.reload(dispatch).get_autotune()
print(json.dumps({"first": first, "tuned": tuned, "seen": seen}))
"""


def test_largekernel_autotune_environment_variable():
    # read once at import, so it is checked in a fresh interpreter (reloading here would leave the
    # other engine modules holding the old dispatch functions)
    import json
    import os
    import subprocess
    import sys

    environ = dict(os.environ, LARGEKERNEL_AUTOTUNE="1")
    out = subprocess.run([sys.executable, "-c", _AUTOTUNE_PROBE], env=environ, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["first"] is True
    assert res["tuned"] > 0  # enabled from the environment, the first call was timed and cached
    assert res["seen"] == {"1": True, "true": True, "YES": True, "on": True,
                           "0": False, "false": False, "": False, "no": False, "unset": False}


# ------------------------------------------------------------------------------- layout in plans
@pytest.mark.parametrize("k", [7, 13])
def test_explain_memory_format_matches_what_conv_runs(k):
    """explain(memory_format=...) reports the plan conv() executes for an input in that layout."""
    x = torch.randn(2, 16, 24, 24, requires_grad=True)
    w = torch.randn(16, 1, k, k, requires_grad=True)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.detach().contiguous(memory_format=fmt).requires_grad_()
        plan = explain(tuple(x.shape), tuple(w.shape), padding=k // 2, groups=16, memory_format=fmt)
        with ops.record_impls() as steps:
            conv(xi, w, padding=k // 2, groups=16).sum().backward()
        ran = {s.stage: s.impl for s in steps}
        assert ran["forward"] == plan.forward, (fmt, ran, plan)


def test_explain_layouts_differ_inside_the_nchw_window():
    nchw = explain((8, 64, 56, 56), (64, 1, 13, 13), padding=6, groups=64)
    cl = explain((8, 64, 56, 56), (64, 1, 13, 13), padding=6, groups=64, memory_format=torch.channels_last)
    # NC* input: oneDNN's NCHW forward inside its window; channels-last input leaves that window
    assert nchw.forward == "native" and cl.forward in ("kernels", "native_cl") and cl.reason != nchw.reason


@pytest.mark.parametrize("shape,fmt", [((2, 4, 9, 9), torch.channels_last_3d), ((2, 4, 9), torch.channels_last),
                                       ((2, 4, 5, 5, 5), torch.channels_last), ((2, 4, 9, 9), torch.preserve_format)])
def test_explain_rejects_a_memory_format_that_does_not_fit(shape, fmt):
    weight = (4, 1) + (3,) * (len(shape) - 2)
    with pytest.raises(ValueError, match="memory_format must be"):
        explain(shape, weight, padding=1, groups=4, memory_format=fmt)


def test_autotune_keeps_one_plan_per_layout():
    ops.clear_autotune_cache()
    old = ops.get_autotune()
    ops.set_autotune(True)
    try:
        x = torch.randn(1, 4, 20, 20)
        w = torch.randn(4, 1, 11, 11)
        conv(x, w, padding=5, groups=4)
        conv(x.contiguous(memory_format=torch.channels_last), w, padding=5, groups=4)
        layouts = sorted(key[-1] for key in ops.dispatch._TUNE_CACHE)
        assert layouts == [False, True]  # tuned separately, not the NC* plan reused for channels-last
        for fmt, flag in ((torch.contiguous_format, False), (torch.channels_last, True)):
            cached = next(p for k, p in ops.dispatch._TUNE_CACHE.items() if k[-1] is flag)
            assert explain((1, 4, 20, 20), (4, 1, 11, 11), padding=5, groups=4, requires_grad=False,
                           memory_format=fmt) == cached
    finally:
        ops.set_autotune(old)
        ops.clear_autotune_cache()
