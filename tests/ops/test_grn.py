"""The fused GRN (``largekernel.ops.grn``) against the unfused definition in float64 (issue 13)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from largekernel.nn import GRN, EngineGRN
from largekernel.nn.acceleration import accelerate, to_torch_convs
from largekernel.ops import cpu_kernels, record_impls
from largekernel.ops.cpu_kernels import rows
from largekernel.ops.grn import grn, grn_reference

NATIVE = cpu_kernels.is_available()


def _reference_grads(x, gamma, beta, grad_out, eps=1e-6):
    """Output and gradients of the unfused GRN computed by autograd in float64."""
    leaves = [t.detach().double().requires_grad_() for t in (x, gamma)]
    beta64 = beta.detach().double().requires_grad_() if beta is not None else None
    out = grn_reference(leaves[0], leaves[1], beta64, eps)
    out.backward(grad_out.double())
    return out, leaves[0].grad, leaves[1].grad, (beta64.grad if beta64 is not None else None)


def _fused_grads(x, gamma, beta, grad_out, eps=1e-6):
    x = x.detach().clone().requires_grad_()
    gamma = gamma.detach().clone().requires_grad_()
    beta = beta.detach().clone().requires_grad_() if beta is not None else None
    with record_impls() as steps:
        out = grn(x, gamma, beta, eps)
        out.backward(grad_out)
    return out, x.grad, gamma.grad, (beta.grad if beta is not None else None), [s.impl for s in steps]


shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.lists(st.integers(1, 6), min_size=1, max_size=3),  # spatial dims
    st.integers(1, 40),  # channels: partial and full 16/8-lane blocks
)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, with_beta=st.booleans(), official_shape=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_unfused_float64(shape, with_beta, official_shape, seed):
    n, spatial, c = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spatial, c, generator=gen, dtype=torch.float64)
    pshape = (1,) * (len(spatial) + 1) + (c,) if official_shape else (c,)
    gamma = torch.randn(pshape, generator=gen, dtype=torch.float64)
    beta = torch.randn(pshape, generator=gen, dtype=torch.float64) if with_beta else None
    grad_out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ref = _reference_grads(x, gamma, beta, grad_out)
    *got, impls = _fused_grads(x, gamma, beta, grad_out)
    assert impls == (["kernels", "kernels"] if NATIVE else ["torch", "torch"])
    for name, a, b in zip(("out", "grad_x", "grad_gamma", "grad_beta"), got, ref):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("native", [True, False])
def test_float32_close_to_float64_reference(native, monkeypatch):
    if native and not NATIVE:
        pytest.skip(f"compiled kernels unavailable: {cpu_kernels.disable_reason()}")
    if not native:
        monkeypatch.setattr(rows, "supports", lambda *t: False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 11, 37, generator=gen)
    gamma, beta = torch.randn(37, generator=gen), torch.randn(37, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)
    ref = _reference_grads(x, gamma, beta, grad_out)
    *got, impls = _fused_grads(x, gamma, beta, grad_out)
    assert impls == (["kernels", "kernels"] if native else ["torch", "torch"])
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=2e-5)


def test_torch_closed_form_is_exact_too(monkeypatch):
    """The fallback (no compiled kernels) uses the same closed-form backward, also exact."""
    monkeypatch.setattr(rows, "supports", lambda *t: False)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 3, 21, generator=gen, dtype=torch.float64)
    gamma, beta = torch.randn(21, generator=gen, dtype=torch.float64), torch.randn(21, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ref = _reference_grads(x, gamma, beta, grad_out)
    *got, impls = _fused_grads(x, gamma, beta, grad_out)
    assert impls == ["torch", "torch"]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_zero_channel_gradient_matches_pytorch():
    """A channel that is zero everywhere has norm 0: its gradient through the norm is 0, as torch's."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 4, 18, generator=gen, dtype=torch.float64)
    x[1, ..., 5] = 0.0
    gamma, beta = torch.randn(18, generator=gen, dtype=torch.float64), torch.randn(18, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ref = _reference_grads(x, gamma, beta, grad_out)
    *got, _ = _fused_grads(x, gamma, beta, grad_out)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        assert torch.isfinite(a).all()


def test_non_contiguous_input_and_gradcheck():
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(2, 17, 5, 6, generator=gen, dtype=torch.float64)
    x = base.permute(0, 2, 3, 1).requires_grad_()  # a channels-last view, not contiguous
    gamma = torch.randn(17, generator=gen, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(17, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(grn(x, gamma, beta), grn_reference(x, gamma, beta), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, g, b: grn(a, g, b), (x, gamma, beta))


def test_double_backward_matches_unfused():
    """create_graph=True (e.g. a gradient penalty) differentiates through the backward exactly."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, g, b: grn(a, g, b), (x, gamma, beta))

    def penalty(fn):
        out = fn(x, gamma, beta)
        (gx,) = torch.autograd.grad((out * out.detach()).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (x, gamma))

    for a, b in zip(penalty(grn), penalty(grn_reference)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mixed_dtypes_follow_pytorch_promotion():
    x = torch.randn(2, 3, 3, 8)
    gamma = torch.randn(8, dtype=torch.float64)
    out = grn(x, gamma, None)
    ref = grn_reference(x, gamma, None)
    assert out.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    "x_shape, gamma_shape, beta_shape, match",
    [((4, 8), (8,), None, "x must be channels-last"), ((2, 3, 8), (7,), None, "gamma must have 8"),
     ((2, 3, 8), (8,), (3,), "beta must have 8")],
)
def test_bad_shapes_name_the_argument(x_shape, gamma_shape, beta_shape, match):
    beta = torch.zeros(beta_shape) if beta_shape else None
    with pytest.raises(ValueError, match=match):
        grn(torch.zeros(x_shape), torch.zeros(gamma_shape), beta)


def _trained_grn(c: int, use_bias: bool = True) -> GRN:
    m = GRN(c, use_bias=use_bias).double()
    with torch.no_grad():
        m.gamma.normal_()
        if m.beta is not None:
            m.beta.normal_()
    return m


def test_engine_grn_module_same_values_state_and_scripting():
    plain = _trained_grn(24)
    fused = accelerate(_trained_grn(24).requires_grad_(False), inplace=True)
    fused.load_state_dict(plain.state_dict())
    assert type(fused) is EngineGRN and list(fused.state_dict()) == list(plain.state_dict())
    x = torch.randn(3, 5, 5, 24, dtype=torch.float64)
    with record_impls() as steps:
        out = fused(x)
    assert [s.stage for s in steps] == ["grn_forward"]
    torch.testing.assert_close(out, plain(x), rtol=1e-12, atol=1e-12)
    scripted = torch.jit.script(fused)  # TorchScript: the unfused operations, same values
    torch.testing.assert_close(scripted(x), plain(x), rtol=1e-12, atol=1e-12)
    assert type(to_torch_convs(fused)) is GRN


def test_fx_trace_keeps_the_fused_call():
    m = EngineGRN(12).double()
    gm = torch.fx.symbolic_trace(m)
    targets = [getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function"]
    assert "_grn_engine" in targets
    x = torch.randn(2, 3, 3, 12, dtype=torch.float64)
    with record_impls() as steps:
        out = gm(x)
    assert [s.stage for s in steps] == ["grn_forward"]
    torch.testing.assert_close(out, GRN(12).double()(x))


def test_accelerated_unireplknet_block_runs_fused_grn_with_same_gradients():
    from largekernel.models.unireplknet import UniRepLKNetBlock

    torch.manual_seed(0)
    block = UniRepLKNetBlock(16, 7, layer_scale_init_value=1.0).double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if "act.1" in name:  # GRN starts as the identity: give it real values
                p.normal_()
    fast = accelerate(block, inplace=False)
    assert isinstance(fast.act[1], EngineGRN) and type(block.act[1]) is GRN
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    fast.train(), block.train()
    with record_impls() as steps:
        fast(x).square().sum().backward()
    assert ("grn_forward", "grn_backward") == tuple(s.stage for s in steps if s.stage.startswith("grn"))
    block(x).square().sum().backward()
    for (name, p), q in zip(block.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-11, msg=name)


def test_cpu_tensors_work_under_another_default_device():
    """The compiled kernels allocate on the CPU, not on torch's default device (e.g. meta)."""
    from largekernel.ops import conv

    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    w = torch.randn(16, 1, 7, 7, dtype=torch.float64)
    h = torch.randn(2, 9, 9, 16, dtype=torch.float64)
    gamma = torch.randn(16, dtype=torch.float64)
    expected_conv = torch.nn.functional.conv2d(x, w, padding=3, groups=16)
    expected_grn = grn_reference(h, gamma, None)
    if not NATIVE:
        pytest.skip(f"compiled kernels unavailable: {cpu_kernels.disable_reason()}")
    from largekernel.ops import force_impl

    with torch.device("meta"), force_impl(forward="kernels"), record_impls() as steps:
        got_conv = conv(x, w, padding=3, groups=16)
        got_grn = grn(h, gamma)
    assert [s.impl for s in steps] == ["kernels", "kernels"]
    torch.testing.assert_close(got_conv, expected_conv)
    torch.testing.assert_close(got_grn, expected_grn)
