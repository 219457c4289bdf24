"""The engine's drop-in Conv1d/2d/3d modules behave exactly like torch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from largekernel.nn.conv import Conv1d, Conv2d, Conv3d

PAIRS = [(Conv1d, nn.Conv1d, 1), (Conv2d, nn.Conv2d, 2), (Conv3d, nn.Conv3d, 3)]


@pytest.mark.parametrize("ours, theirs, nd", PAIRS, ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular", "replicate"])
@pytest.mark.parametrize("kind", ["depthwise-large", "dense-same-even", "grouped-strided"])
def test_matches_torch_module(ours, theirs, nd, padding_mode, kind):
    if kind == "depthwise-large":
        k = {1: 15, 2: 9, 3: 5}[nd]
        cfg = dict(in_channels=4, out_channels=4, kernel_size=k, padding=k // 2, groups=4)
    elif kind == "dense-same-even":
        cfg = dict(in_channels=3, out_channels=5, kernel_size=4, padding="same", dilation=1)
    else:
        cfg = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    torch.manual_seed(0)
    ref = theirs(padding_mode=padding_mode, dtype=torch.float64, **cfg)
    mine = ours(padding_mode=padding_mode, dtype=torch.float64, **cfg)
    # identical state dict layout
    assert list(mine.state_dict().keys()) == list(ref.state_dict().keys())
    assert all(mine.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    mine.load_state_dict(ref.state_dict())
    assert repr(mine) == repr(ref)
    size = {1: (17,), 2: (11, 10), 3: (7, 6, 8)}[nd]
    x = torch.randn(2, cfg["in_channels"], *size, dtype=torch.float64)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = mine(xa), ref(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad)
    if ref.bias is not None:
        torch.testing.assert_close(mine.bias.grad, ref.bias.grad)


def test_is_subclass_and_factory_kwargs():
    m = Conv2d(8, 8, 13, padding=6, groups=8, device="cpu", dtype=torch.float64)
    assert isinstance(m, nn.Conv2d)
    assert m.weight.dtype == torch.float64
    with pytest.raises(ValueError):
        Conv2d(8, 8, 3, groups=3)  # torch's own constructor validation is kept
    x = torch.randn(1, 8, 20, 20, dtype=torch.float64)
    y = m(x)
    torch.testing.assert_close(y, nn.functional.conv2d(x, m.weight, m.bias, padding=6, groups=8))


def test_state_dict_roundtrip_with_torch():
    ref = nn.Conv1d(6, 6, 31, padding=15, groups=6)
    mine = Conv1d(6, 6, 31, padding=15, groups=6)
    ref.load_state_dict(mine.state_dict())
    x = torch.randn(2, 6, 40)
    torch.testing.assert_close(ref(x), mine(x), rtol=1e-5, atol=1e-5)


def test_onnx_export_and_trace_use_plain_aten_graph():
    m = nn.Sequential(Conv2d(4, 4, 13, padding=6, groups=4), nn.ReLU()).eval()
    x = torch.randn(1, 4, 16, 16)
    traced = torch.jit.trace(m, (x,))
    assert "PythonOp" not in str(traced.graph)
    torch.testing.assert_close(traced(x), m(x), rtol=1e-5, atol=1e-5)
    onnx = pytest.importorskip("onnx")
    import io

    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == "Conv" for n in model.graph.node)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.detach().numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_torchscript_with_padding_modes_matches_torch(nd, padding_mode):
    """Scripted drop-ins take PyTorch's own path, padding modes included (checked against torch's module)."""
    from largekernel.nn.conv import Conv1d, Conv2d, Conv3d

    ours_cls = {1: Conv1d, 2: Conv2d, 3: Conv3d}[nd]
    torch_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    torch.manual_seed(0)
    kwargs = dict(kernel_size=5, padding=2, groups=4, padding_mode=padding_mode, dtype=torch.float64)
    ref = torch_cls(4, 4, **kwargs)
    ours = ours_cls(4, 4, **kwargs)
    ours.load_state_dict(ref.state_dict())
    scripted = torch.jit.script(ours)
    x = torch.randn((2, 4) + (7,) * nd, dtype=torch.float64)
    torch.testing.assert_close(scripted(x), ref(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)  # eager: the engine
