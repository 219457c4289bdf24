"""Compiled depthwise CPU kernels vs a float64 PyTorch autograd reference."""

from __future__ import annotations

import logging
import os
import shutil
import threading

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from largekernel.ops import cpu_kernels as ck
from largekernel.ops.cpu_kernels import build

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

needs_native = pytest.mark.skipif(not ck.is_available(), reason=f"native kernels unavailable: {ck.disable_reason()}")


def reference_grad_weight(x, grad_out, kernel, stride, padding, dilation):
    """d/dw of sum(conv(x, w) * grad_out) in float64 via autograd."""
    c = x.shape[1]
    w = torch.zeros((c, 1, *kernel), dtype=torch.float64, requires_grad=True)
    y = _CONV[x.dim() - 2](x.detach().double(), w, None, stride, padding, dilation, c)
    return torch.autograd.grad(y, w, grad_out.double())[0]


def reference_forward(x, w, stride, padding, dilation):
    return _CONV[x.dim() - 2](x.double(), w.double(), None, stride, padding, dilation, x.shape[1])


def rel_err(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values as ``t`` in another memory layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        if t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        if t.dim() == 5:
            return t.contiguous(memory_format=torch.channels_last_3d)
        return t.transpose(1, 2).contiguous().transpose(1, 2)  # (N, L, C) storage
    if layout == "strided":
        # every other element of a bigger buffer along the last dim, batch dim permuted in memory
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]  # non-contiguous unless the last dim has size 1
    raise AssertionError(layout)


@st.composite
def problems(draw):
    dims = draw(st.integers(1, 3))
    max_size = {1: 40, 2: 12, 3: 6}[dims]
    max_k = {1: 19, 2: 9, 3: 4}[dims]
    sizes, kernel, stride, padding, dilation = [], [], [], [], []
    for _ in range(dims):
        k = draw(st.integers(1, max_k))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 3))
        p = draw(st.integers(0, 4))
        size = draw(st.integers(1, max_size))
        assume(out_size(size, k, s, p, d) >= 1)
        sizes.append(size)
        kernel.append(k)
        stride.append(s)
        padding.append(p)
        dilation.append(d)
    n = draw(st.integers(1, 3))
    c = draw(st.sampled_from([1, 3, 8, 16, 17, 40]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    return (n, c, *sizes), tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), dtype, layout


@needs_native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(problem=problems(), seed=st.integers(0, 2**16))
def test_grad_weight_and_forward_match_reference(problem, seed):
    shape, kernel, stride, padding, dilation, dtype, layout = problem
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=torch.float64)
    y_ref = reference_forward(x, w, stride, padding, dilation)
    gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    gw_ref = reference_grad_weight(x, gy, kernel, stride, padding, dilation)

    xl = make_layout(x.to(dtype), layout)
    gyl = make_layout(gy.to(dtype), layout)
    assert ck.supports(xl, w.shape, stride, dilation)
    gw = ck.depthwise_grad_weight(xl, gyl, kernel, stride, padding, dilation)
    assert gw.shape == gw_ref.shape and gw.dtype == dtype and gw.is_contiguous()
    assert rel_err(gw, gw_ref) <= _TOL[dtype]

    y = ck.depthwise_forward(xl, w.to(dtype), stride, padding, dilation)
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert rel_err(y, y_ref) <= _TOL[dtype]


@needs_native
@pytest.mark.parametrize(
    "shape,kernel,padding",
    [
        ((2, 40, 300), (31,), (15,)),  # row longer than one L1 chunk, 8/4/2/1-tap tails
        ((1, 1, 200), (37,), (18,)),  # one channel block: kernel split into tap groups
        ((2, 3, 20, 21), (13, 13), (6, 6)),  # one block, kernel rows split into row groups
        ((1, 40, 7, 6), (17, 16), (8, 8)),  # input smaller than the (even) kernel
        ((1, 5, 3), (9,), (4,)),  # input much smaller than the kernel
        ((2, 16, 9, 9, 9), (7, 7, 7), (3, 3, 3)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_kernels_match_reference(shape, kernel, padding, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=torch.float64)
    ones = (1,) * len(kernel)
    y_ref = reference_forward(x, w, ones, padding, ones)
    gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    gw_ref = reference_grad_weight(x, gy, kernel, ones, padding, ones)
    gw = ck.depthwise_grad_weight(x.to(dtype), gy.to(dtype), kernel, ones, padding, ones)
    assert rel_err(gw, gw_ref) <= _TOL[dtype]
    y = ck.depthwise_forward(x.to(dtype), w.to(dtype), ones, padding, ones)
    assert rel_err(y, y_ref) <= _TOL[dtype]


@needs_native
@pytest.mark.parametrize(
    "shape,kernel,padding,dilation",
    [
        ((2, 40, 300), (9,), (20,), (5,)),  # dilation phases across L1 chunks
        ((1, 16, 13, 14), (5, 5), (4, 6), (2, 3)),
        ((1, 3, 7), (3,), (4,), (4,)),
        ((1, 8, 5, 6, 9), (3, 2, 3), (2, 1, 3), (2, 3, 3)),
    ],
)
def test_dilated_kernels_match_reference(shape, kernel, padding, dilation):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    ones = (1,) * len(kernel)
    w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=torch.float64)
    y_ref = reference_forward(x, w, ones, padding, dilation)
    gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    gw_ref = reference_grad_weight(x, gy, kernel, ones, padding, dilation)
    for dtype in (torch.float32, torch.float64):
        gw = ck.depthwise_grad_weight(x.to(dtype), gy.to(dtype), kernel, ones, padding, dilation)
        assert rel_err(gw, gw_ref) <= _TOL[dtype]
        y = ck.depthwise_forward(x.to(dtype), w.to(dtype), ones, padding, dilation)
        assert rel_err(y, y_ref) <= _TOL[dtype]


@needs_native
@pytest.mark.parametrize(
    "shape,kernel,dtype",
    [((2, 32, 20, 19), (13, 13), torch.float32), ((2, 16, 100), (31,), torch.float64), ((1, 16, 5, 6, 7), (3, 5, 3), torch.float32)],
)
def test_channels_last_gradient_read_in_place(shape, kernel, dtype):
    # C % lanes == 0 and channels innermost: the gradient is read without packing
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    padding = tuple(k // 2 for k in kernel)
    ones = (1,) * len(kernel)
    gy = torch.randn(shape, generator=gen, dtype=torch.float64)
    ref = reference_grad_weight(x, gy, kernel, ones, padding, ones)
    gyl = make_layout(gy.to(dtype), "channels_last")
    assert gyl.stride(1) == 1
    gw = ck.depthwise_grad_weight(make_layout(x.to(dtype), "channels_last"), gyl, kernel, ones, padding, ones)
    assert rel_err(gw, ref) <= _TOL[dtype]


@needs_native
@pytest.mark.parametrize("threads", [3, 7])
def test_parallel_split_matches_reference(monkeypatch, threads):
    # force the thread-pool path and finer task splits (row groups, tap groups, odd chunk counts)
    monkeypatch.setattr(ck, "_num_threads", lambda: threads)
    monkeypatch.setattr(ck, "_MIN_CHUNK_COST", 1)
    cases = [
        ((2, 3, 11, 12), (5, 7), (2, 3), (1, 2), torch.float32),
        ((1, 16, 50), (29,), (14,), (1,), torch.float64),
        ((3, 40, 6, 5, 7), (3, 3, 3), (1, 1, 1), (2, 1, 1), torch.float32),
    ]
    for shape, kernel, padding, stride, dtype in cases:
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=torch.float64)
        ones = (1,) * len(kernel)
        y_ref = reference_forward(x, w, stride, padding, ones)
        gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
        gw = ck.depthwise_grad_weight(x.to(dtype), gy.to(dtype), kernel, stride, padding, ones)
        assert rel_err(gw, reference_grad_weight(x, gy, kernel, stride, padding, ones)) <= _TOL[dtype]
        y = ck.depthwise_forward(x.to(dtype), w.to(dtype), stride, padding, ones)
        assert rel_err(y, y_ref) <= _TOL[dtype]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    "shape,kernel,pairs,stride",
    [
        ((2, 20, 30), (8,), ((3, 4),), (1,)),  # even-kernel "same"
        ((1, 17, 9, 12), (4, 6), ((1, 2), (2, 3)), (1, 2)),
        ((2, 8, 10, 9), (3, 3), ((-1, 2), (0, -2)), (1, 1)),  # negative = crop
        ((1, 5, 4, 5, 6), (2, 3, 4), ((0, 1), (1, 1), (2, 1)), (1, 1, 2)),
    ],
)
def test_asymmetric_padding_pairs(monkeypatch, native, shape, kernel, pairs, stride):
    if native and not ck.is_available():
        pytest.skip("native kernels unavailable")
    if not native:
        monkeypatch.setenv("LARGEKERNEL_DISABLE_NATIVE", "1")
        monkeypatch.setattr(ck, "_env_warned", True)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=torch.float64)
    xpad = F.pad(x, [v for lo, hi in reversed(pairs) for v in (lo, hi)])
    ones = (1,) * len(kernel)
    zeros = (0,) * len(kernel)
    y_ref = reference_forward(xpad, w, stride, zeros, ones)
    gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    gw_ref = reference_grad_weight(xpad, gy, kernel, stride, zeros, ones)
    for dtype in (torch.float32, torch.float64):
        gw = ck.depthwise_grad_weight(x.to(dtype), gy.to(dtype), kernel, stride, pairs, ones)
        assert rel_err(gw, gw_ref) <= _TOL[dtype]
        y = ck.depthwise_forward(x.to(dtype), w.to(dtype), stride, pairs, ones)
        assert rel_err(y, y_ref) <= _TOL[dtype]


def test_bad_padding_pairs():
    x, gy = torch.randn(1, 2, 10), torch.randn(1, 2, 10)
    with pytest.raises(ValueError, match="pairs"):
        ck.depthwise_grad_weight(x, gy, (3,), 1, ((1, 1), (1, 1)), 1)
    with pytest.raises(TypeError, match="pairs"):
        ck.depthwise_grad_weight(x, gy, (3,), 1, ((1, 1, 1),), 1)
    with pytest.raises(ValueError, match="smaller than"):
        ck.depthwise_grad_weight(x, gy, (3,), 1, ((-5, -5),), 1)


@needs_native
def test_expanded_and_channels_last_outputs():
    # stride-0 (expanded) inputs are read through their strides
    x = torch.randn(1, 24, 1, 10).expand(3, 24, 8, 10)
    gy = torch.randn(3, 24, 8, 10)
    ref = reference_grad_weight(x, gy, (3, 5), (1, 1), (1, 2), (1, 1))
    assert rel_err(ck.depthwise_grad_weight(x, gy, (3, 5), (1, 1), (1, 2), (1, 1)), ref) <= 1e-5
    # channels-last in -> channels-last out
    xc = torch.randn(2, 20, 9, 9).contiguous(memory_format=torch.channels_last)
    y = ck.depthwise_forward(xc, torch.randn(20, 1, 5, 5), 1, 2, 1)
    assert y.is_contiguous(memory_format=torch.channels_last)


@needs_native
def test_concurrent_callers(monkeypatch):
    # several Python threads share the pool and the workspace
    monkeypatch.setattr(ck, "_MIN_CHUNK_COST", 1)
    gen = torch.Generator().manual_seed(5)
    problems = []
    for i in range(4):
        x = torch.randn(2, 16 + 8 * i, 15, 14, generator=gen, dtype=torch.float64)
        gy = torch.randn(2, 16 + 8 * i, 15, 14, generator=gen, dtype=torch.float64)
        problems.append((x, gy, reference_grad_weight(x, gy, (7, 5), (1, 1), (3, 2), (1, 1))))
    errors: list[float] = []

    def worker(x, gy, ref):
        for _ in range(3):
            errors.append(rel_err(ck.depthwise_grad_weight(x.float(), gy.float(), (7, 5), 1, (3, 2), 1), ref))

    threads = [threading.Thread(target=worker, args=p) for p in problems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 12 and max(errors) <= 1e-5


@needs_native
def test_empty_batch_gives_zero_gradient():
    x = torch.randn(0, 4, 10)
    gw = ck.depthwise_grad_weight(x, torch.randn(0, 4, 10), (3,), 1, 1, 1)
    assert gw.shape == (4, 1, 3) and not gw.any()


def test_workspace_reuses_and_bounds_buffers(monkeypatch):
    monkeypatch.setattr(ck, "_ws_free", __import__("collections").OrderedDict())
    monkeypatch.setattr(ck, "_ws_bytes", 0)
    monkeypatch.setenv("LARGEKERNEL_NATIVE_WORKSPACE_MB", "1")
    a = ck._ws_take((4, 1000), torch.float32)
    ptr = a.data_ptr()
    ck._ws_give(a)
    del a
    b = ck._ws_take((2, 2000), torch.float32)  # same element count and dtype: recycled
    assert b.data_ptr() == ptr and b.shape == (2, 2000)
    c = ck._ws_take((4000,), torch.float64)  # other dtype: fresh
    assert c.data_ptr() != ptr
    big = torch.empty(2 << 20, dtype=torch.uint8)  # 2 MB > 1 MB limit: never cached
    ck._ws_give(b, c, big)
    assert ck._ws_bytes <= 1 << 20
    assert all(t.nbytes <= 1 << 20 for free in ck._ws_free.values() for t in free)
    monkeypatch.setenv("LARGEKERNEL_NATIVE_WORKSPACE_MB", "0")
    ck._ws_give(ck._ws_take((10,), torch.float32))
    assert ck._ws_bytes == 0 and not ck._ws_free


def test_supports():
    x = torch.randn(2, 8, 10, 10)
    assert ck.supports(x, (8, 1, 5, 5), 1, 1) == ck.is_available()
    assert not ck.supports(x, (8, 2, 5, 5), 1, 1)  # not depthwise
    assert not ck.supports(x, (4, 1, 5, 5), 1, 1)  # channel mismatch
    assert not ck.supports(x, (8, 1, 5), 1, 1)  # wrong kernel rank
    assert not ck.supports(x.half(), (8, 1, 5, 5), 1, 1)
    assert not ck.supports(x.int(), (8, 1, 5, 5), 1, 1)
    assert not ck.supports(torch.randn(2, 8), (8, 1), 1, 1)
    assert not ck.supports(x, (8, 1, 5, 5), 0, 1)
    assert not ck.supports(x, (8, 1, 5, 5), 1, (1, 2, 3))
    assert not ck.supports("x", (8, 1, 5, 5), 1, 1)


def test_bad_arguments():
    x = torch.randn(2, 4, 10)
    gy = torch.randn(2, 4, 10)
    with pytest.raises(ValueError, match="grad_output"):
        ck.depthwise_grad_weight(x, torch.randn(2, 4, 9), (3,), 1, 1, 1)
    with pytest.raises(ValueError, match="padding"):
        ck.depthwise_grad_weight(x, gy, (3,), 1, -1, 1)
    with pytest.raises(ValueError, match="stride"):
        ck.depthwise_grad_weight(x, gy, (3,), 0, 1, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        ck.depthwise_grad_weight(x, gy, (3, 3), 1, 1, 1)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        ck.depthwise_grad_weight(x, gy, (11,), 1, 0, 1)
    with pytest.raises(TypeError, match="dilation"):
        ck.depthwise_grad_weight(x, gy, (3,), 1, 1, 1.5)
    with pytest.raises(TypeError, match="grad_output"):
        ck.depthwise_grad_weight(x, gy.numpy(), (3,), 1, 1, 1)
    with pytest.raises(ValueError, match="spatial"):
        ck.depthwise_grad_weight(torch.randn(2, 4), gy, (3,), 1, 1, 1)
    with pytest.raises(ValueError, match="weight"):
        ck.depthwise_forward(x, torch.randn(4, 2, 3), 1, 1, 1)
    with pytest.raises(TypeError, match="weight"):
        ck.depthwise_forward(x, [1.0], 1, 1, 1)


def test_disabled_by_env_falls_back_to_pytorch(monkeypatch, caplog):
    monkeypatch.setenv("LARGEKERNEL_DISABLE_NATIVE", "1")
    monkeypatch.setattr(ck, "_env_warned", False)
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        assert not ck.is_available()
        assert not ck.is_available()
    assert len([r for r in caplog.records if "LARGEKERNEL_DISABLE_NATIVE" in r.getMessage()]) == 1
    assert "LARGEKERNEL_DISABLE_NATIVE" in ck.disable_reason()
    x = torch.randn(2, 5, 8, 9)
    assert not ck.supports(x, (5, 1, 3, 3), 1, 1)
    gy = torch.randn(2, 5, 4, 9)
    ref = reference_grad_weight(x, gy, (3, 3), (2, 1), (1, 1), (1, 1))
    gw = ck.depthwise_grad_weight(x, gy, (3, 3), (2, 1), (1, 1), (1, 1))
    assert rel_err(gw, ref) <= 1e-5
    w = torch.randn(5, 1, 3, 3)
    y = ck.depthwise_forward(x, w, (2, 1), 1, 1)
    assert rel_err(y, reference_forward(x, w, (2, 1), 1, 1)) <= 1e-5
    # also bad arguments still raise in fallback mode
    with pytest.raises(ValueError):
        ck.depthwise_grad_weight(x, gy, (3, 3), 1, 1, 1)


def test_compile_failure_warns_once_and_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(ck, "_lib", None)
    monkeypatch.setattr(ck, "_load_error", None)
    monkeypatch.setattr(build, "find_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        assert not ck.is_available()
        assert not ck.is_available()
        assert not ck.supports(torch.randn(1, 2, 5), (2, 1, 3), 1, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no C compiler" in warnings[0].getMessage()
    assert "no C compiler" in ck.disable_reason()
    x, gy = torch.randn(1, 2, 5), torch.randn(1, 2, 5)
    ref = reference_grad_weight(x, gy, (3,), (1,), (1,), (1,))
    assert rel_err(ck.depthwise_grad_weight(x, gy, (3,), 1, 1, 1), ref) <= 1e-5


@pytest.mark.skipif(build.find_compiler() is None, reason="no C compiler")
def test_available_when_a_compiler_exists():
    if os.environ.get("LARGEKERNEL_DISABLE_NATIVE"):
        pytest.skip("disabled by the environment")
    assert ck.is_available(), ck.disable_reason()


@pytest.mark.skipif(build.find_compiler() is None, reason="no C compiler")
def test_cache_build_is_atomic_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(tmp_path))
    compiler = build.find_compiler()
    target = build.library_path(compiler)
    assert target.parent == tmp_path / "cpu_kernels" and not target.exists()
    # concurrent builders of the same target: each writes a private temp file, then replaces
    errors = []

    def worker():
        try:
            build.build(compiler, target)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp files left
    lib = build.load()
    assert lib.lk_dwconv_abi_version() == build.ABI_VERSION
    # second load reuses the cached file: building again would fail loudly here
    monkeypatch.setattr(build, "build", lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    build.load()


@pytest.mark.skipif(shutil.which("false") is None, reason="needs the `false` command")
def test_failed_compile_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(tmp_path))
    target = tmp_path / "cpu_kernels" / "x.so"
    with pytest.raises(RuntimeError, match="failed"):
        build.build(shutil.which("false"), target)
    assert list(target.parent.iterdir()) == []
    monkeypatch.setenv("CC", shutil.which("false"))
    assert build.find_compiler() == shutil.which("false")


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", [2, 3])
def test_nchw_packing_in_register_tiles(dtype, dims):
    """NCHW inputs with whole channel blocks are packed (and results unpacked) as transposed
    VL x VL register tiles, the rest element by element: widths with whole tiles and a tail,
    channels with whole blocks and a partial one, padding on both sides of the row."""
    lanes = 16 if dtype == torch.float32 else 8
    c, w = 2 * lanes + 3, 2 * lanes + 5
    spatial = (7, w) if dims == 2 else (3, 5, w)
    g = torch.Generator().manual_seed(dims)
    x = torch.randn((2, c, *spatial), dtype=dtype, generator=g)
    kernel = (5,) * dims
    weight = torch.randn((c, 1, *kernel), dtype=dtype, generator=g)
    pad = (2,) * dims
    got = ck.depthwise_forward(x, weight, 1, pad, 1)
    ref = reference_forward(x, weight, 1, pad, 1)
    assert got.is_contiguous() and rel_err(got, ref) < _TOL[dtype]
    grad_out = torch.randn(ref.shape, dtype=dtype, generator=g)
    gw = ck.depthwise_grad_weight(x, grad_out, kernel, (1,) * dims, pad, (1,) * dims)
    assert rel_err(gw, reference_grad_weight(x, grad_out, kernel, 1, pad, 1)) < _TOL[dtype]
