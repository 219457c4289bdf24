"""The engine as a ``torch.library`` custom operator: opaque to dynamo, exact under inductor."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from largekernel import ops
from largekernel.nn.acceleration import accelerate, to_torch_convs
from largekernel.nn.conv import Conv2d
from largekernel.ops import custom_op, native

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.fixture(autouse=True)
def _switch_restored():
    old = custom_op.compile_engine_enabled()
    torch._dynamo.reset()
    yield
    custom_op.set_compile_engine(old)
    torch._dynamo.reset()


class _Tiny(nn.Module):
    """Depthwise 13x13 on the engine + GELU + BatchNorm + 1x1: the fused-around-the-engine case.

    (GELU before BatchNorm so that the depthwise bias has a non-zero gradient to compare.)"""

    def __init__(self) -> None:
        super().__init__()
        self.dw = Conv2d(8, 8, 13, padding=6, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.GELU()
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.pw(self.bn(self.act(self.dw(x))))


def _grads(model, x):
    y = model(x)
    (y.square().sum()).backward()
    return y.detach(), [x.grad.detach().clone()] + [p.grad.detach().clone() for p in model.parameters()]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return (a.double() - b.double()).abs().max().item() <= rel * max(b.abs().max().item(), 1.0)


@pytest.mark.parametrize(
    "backend",
    # aot_eager runs the same AOTAutograd tracing (fake kernels, registered autograd) in seconds;
    # inductor's C++ code generation costs 15-60 s on this machine, so it is in the slow suite
    ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)],
)
def test_compiled_matches_eager_engine_and_float64_reference(backend):
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(2, 8, 20, 20)

    ref64 = to_torch_convs(copy.deepcopy(model)).double()  # independent: PyTorch's convs in float64
    y64, g64 = _grads(ref64, x.double().requires_grad_())
    eager = copy.deepcopy(model)
    y_e, g_e = _grads(eager, x.clone().requires_grad_())

    if backend == "inductor":
        compiled = accelerate(copy.deepcopy(model), compile=True)  # torch.compile's default backend
    else:
        custom_op.set_compile_engine(True)
        compiled = torch.compile(accelerate(copy.deepcopy(model)), backend=backend)
    assert custom_op.compile_engine_enabled()
    with ops.record_impls() as steps:
        y_c, g_c = _grads(compiled, x.clone().requires_grad_())
    assert _close(y_c, y_e, 1e-5) and _close(y_c, y64, 1e-5)
    assert len(g_c) == len(g64) == 1 + len(list(model.parameters()))
    for gc, ge, gr in zip(g_c, g_e, g64):
        assert _close(gc, ge, 1e-4)
        assert _close(gc, gr, 1e-4)
    # the engine, not PyTorch's autograd, ran inside the compiled graph: forward and backward
    stages = {(s.stage, s.impl) for s in steps}
    assert any(stage == "forward" for stage, _ in stages)
    assert any(stage == "grad_input" for stage, _ in stages)
    expected_gw = "kernels" if native.kernels_module() is not None else "fft"
    assert ("grad_weight", expected_gw) in stages


def test_dynamo_sees_one_opaque_node_and_no_graph_break():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    custom_op.set_compile_engine(True)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    targets = [n.target for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert sum(t in (torch.ops.largekernel.conv, torch.ops.largekernel.conv.default) for t in targets) == 1
    assert F.conv2d in targets  # the 1x1 conv stays a plain call that inductor handles itself


def test_switch_off_by_default_keeps_plain_conv():
    assert not custom_op.compile_engine_enabled()
    explanation = torch._dynamo.explain(_Tiny())(torch.randn(1, 8, 16, 16))
    targets = [n.target for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert not any(t in (torch.ops.largekernel.conv, torch.ops.largekernel.conv.default) for t in targets)
    assert targets.count(F.conv2d) == 2


def test_export_and_jit_trace_still_give_standard_ops():
    model = accelerate(_Tiny().eval(), compile=True)._orig_mod
    x = torch.randn(1, 8, 16, 16)
    assert custom_op.compile_engine_enabled()
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert not any("largekernel" in t for t in targets)
    assert any("convolution" in t or "conv2d" in t for t in targets)
    traced = torch.jit.trace(model, x)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and not any(k.startswith("largekernel") for k in kinds)


# (x shape, weight shape, stride, (lo, hi) pads, dilation, groups, channels_last, bias)
_CASES = [
    ((2, 6, 15, 14), (6, 1, 7, 7), (1, 1), ((3, 3), (3, 3)), (1, 1), 6, False, True),
    ((2, 6, 15, 14), (6, 1, 8, 6), (1, 1), ((3, 4), (2, 3)), (1, 1), 6, False, False),  # "same", even K
    ((1, 4, 3, 4), (4, 1, 13, 13), (1, 1), ((6, 6), (6, 6)), (1, 1), 4, False, True),  # taps cropped
    ((2, 4, 17, 16), (8, 1, 5, 9), (2, 1), ((2, 2), (8, 8)), (1, 2), 4, True, True),  # multiplier, CL
    ((2, 6, 33), (6, 1, 31), (1,), ((15, 15),), (1,), 6, False, True),  # 1-D
    ((1, 3, 6, 6, 5), (3, 1, 5, 5, 5), (1, 1, 1), ((2, 2),) * 3, (1, 1, 1), 3, False, False),  # 3-D
]


def _case(case, dtype):
    xs, ws, stride, pads, dil, groups, cl, bias = case
    g = torch.Generator().manual_seed(1)
    x = torch.randn(xs, generator=g, dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(ws, generator=g, dtype=dtype)
    b = torch.randn(ws[0], generator=g, dtype=dtype) if bias else None
    flat = [v for pair in pads for v in pair]
    return x, w, b, list(stride), flat, list(dil), groups


@pytest.mark.parametrize("case", _CASES, ids=range(len(_CASES)))
def test_operator_registration_is_consistent(case):
    # schema, fake kernel (shapes *and* strides) against the real one, autograd registration
    x, w, b, stride, flat, dil, groups = _case(case, torch.float32)
    tensors = [t.requires_grad_() for t in (x, w, b) if t is not None]
    assert tensors
    torch.library.opcheck(
        torch.ops.largekernel.conv.default, (x, w, b, stride, flat, dil, groups, True),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@pytest.mark.parametrize("case", _CASES, ids=range(len(_CASES)))
def test_operator_and_gradients_match_float64_conv(case):
    x, w, b, stride, flat, dil, groups = _case(case, torch.float32)
    nd = w.dim() - 2
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    y = torch.ops.largekernel.conv(x, w, b, stride, flat, dil, groups, True)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(y, leaves, gy)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    xr, wr = ref_leaves[0], ref_leaves[1]
    br = ref_leaves[2] if b is not None else None
    xr_padded = F.pad(xr, [v for pair in reversed(list(zip(flat[::2], flat[1::2]))) for v in pair])
    y_ref = _CONV[nd](xr_padded, wr, br, stride, 0, dil, groups)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, gy.double())
    assert y.shape == y_ref.shape and y.dtype == torch.float32
    assert _close(y, y_ref, 1e-5)
    for got, want, leaf in zip(grads, ref_grads, leaves):
        assert got.shape == leaf.shape and got.dtype == leaf.dtype
        assert _close(got, want, 1e-5)
    # the memory format PyTorch's own convolution returns
    y_torch = _CONV[nd](xr_padded.detach().float(), w.detach(), None, stride, 0, dil, groups)
    if x.is_contiguous():
        assert y.is_contiguous() == y_torch.is_contiguous()


def test_switch_validation_and_context_manager():
    with pytest.raises(TypeError, match="enabled"):
        custom_op.set_compile_engine(1)
    with pytest.raises(TypeError, match="compile"):
        accelerate(_Tiny(), compile="yes")
    with custom_op.compile_engine():
        assert custom_op.compile_engine_enabled()
        assert not custom_op.use_custom_op()  # eager: nothing is being compiled
    assert not custom_op.compile_engine_enabled()
