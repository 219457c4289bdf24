"""Post-training int8 quantisation (ONNX Runtime static, per-channel) of a deploy-form model on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import largekernel
from largekernel.data import build_dataset
from largekernel.deploy import export, onnx_accuracy, quantize_onnx

pytest.importorskip("onnxruntime", reason="onnxruntime is needed for int8 quantisation")
onnx = pytest.importorskip("onnx", reason="onnx is needed for int8 quantisation")


def _split(split: str):
    ds = build_dataset("digits", split, image_size=32)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A small UniRepLKNet (13x13 kernels) trained for 3 epochs on the bundled digits."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = largekernel.create_model(
            "unireplknet_a", in_chans=1, num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64),
            kernel_sizes=((13,), (13,), (13,), (7,)), stem_stride=2)
        x, y = _split("train")
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            for idx in torch.randperm(len(x), generator=g).split(64):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), x


def test_int8_model_runs_and_accuracy_change_is_small(trained, tmp_path, record_property, capsys):
    model, x_train = trained
    x_test, y_test = _split("test")
    with torch.no_grad():
        torch_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    fp32 = export(model, tmp_path / "m.onnx", input_size=32, dynamo=False).path
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", list(x_train[:128].split(32)))
    fp32_acc = onnx_accuracy(fp32, x_test, y_test)
    int8_acc = onnx_accuracy(int8, x_test, y_test)
    record_property("digits_fp32_accuracy", fp32_acc)
    record_property("digits_int8_accuracy", int8_acc)
    with capsys.disabled():
        print(f"\ndigits top-1: PyTorch {torch_acc:.4f}, ONNX fp32 {fp32_acc:.4f}, int8 {int8_acc:.4f} "
              f"(change {int8_acc - fp32_acc:+.4f})")
    assert torch_acc > 0.8  # the model did learn: the comparison means something
    assert abs(fp32_acc - torch_acc) <= 1.5 / len(y_test)  # fp32 export: same predictions (+-1 tie)
    assert int8_acc >= fp32_acc - 0.05
    # it really is an int8 model with one weight scale per output channel
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    int8_weights = [v for v in inits.values() if v.dtype == np.int8 and v.ndim == 4]
    assert int8_weights, "no int8 convolution weights"
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                 and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert weight_dq and all(inits[n.input[1]].size == inits[n.input[0]].shape[0] for n in weight_dq)
    assert int8.stat().st_size < fp32.stat().st_size


def test_quantize_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", [np.zeros((1, 1, 8, 8), np.float32)])
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "q.onnx", [np.zeros((1, 1, 8, 8), np.float32)])
    with pytest.raises(ValueError, match="at least one"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "q.onnx", [])
    with pytest.raises(ValueError, match="method"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "q.onnx", [np.zeros(1)], method="magic")
    assert not (tmp_path / "q.onnx").exists()
