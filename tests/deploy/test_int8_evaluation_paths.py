"""int8 evaluation helpers (``largekernel.deploy.quantize``) on a tiny classifier, against PyTorch.

The fp32 ONNX top-1 must be PyTorch's own top-1 on the same images, the int8 top-1 what
``onnx_accuracy`` measures on the kept int8 file, and a fixed export batch must be padded
without changing any prediction.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from largekernel.data import build_dataset
from largekernel.deploy.quantize import (
    Int8Evaluation,
    _predict,
    calibration_batches,
    evaluate_int8,
    onnx_accuracy,
)


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, 4)).eval()


def test_evaluate_int8_agrees_with_pytorch_and_onnx_accuracy(tmp_path):
    model = _tiny_classifier()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(20, 1, 12, 12, generator=g)
    with torch.no_grad():
        torch_pred = model(images).argmax(1)
    # labels: PyTorch's prediction for the first 15 images, a wrong class for the last 5
    labels = torch_pred.clone()
    labels[15:] = (labels[15:] + 1) % 4
    batches = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    calibration = [torch.randn(8, 1, 12, 12, generator=g), torch.randn(4, 1, 12, 12, generator=g)]
    report = evaluate_int8(model, batches, calibration, workdir=tmp_path)
    assert report.images == 20 and report.calibration_images == 12
    assert report.fp32_top1 == pytest.approx(15 / 20)  # the fp32 export predicts what PyTorch does
    assert report.export_max_abs_diff < 1e-4
    assert report.int8_top1 == pytest.approx(onnx_accuracy(tmp_path / "model.int8.onnx", images, labels))
    assert report.fp32_top1 == pytest.approx(onnx_accuracy(tmp_path / "model.onnx", images, labels))
    assert 0.0 <= report.agreement <= 1.0
    assert report.int8_bytes == (tmp_path / "model.int8.onnx").stat().st_size > 0
    d = report.to_dict()
    assert d["change"] == pytest.approx(report.int8_top1 - report.fp32_top1) == pytest.approx(report.change)


def test_fixed_export_batch_is_padded_without_changing_predictions():
    weight = torch.randn(5, 3 * 4 * 4, generator=torch.Generator().manual_seed(2))

    def run(x):  # an export with a fixed batch of 4: any other batch is a runtime error
        assert x.shape[0] == 4, x.shape
        return x.flatten(1) @ weight.T

    x = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    expected = (x.flatten(1) @ weight.T).argmax(1)
    assert torch.equal(_predict(run, x, 4), expected)  # 4 + 4 + 2 (padded to 4)
    assert torch.equal(_predict(run, x[:4], None), expected[:4])


def test_calibration_batches_are_the_first_unaugmented_images():
    batches = calibration_batches("digits", image_size=16, count=40, batch_size=32)
    assert [b.shape[0] for b in batches] == [32, 8]
    dataset = build_dataset("digits", "train", image_size=16, augment=False)
    expected = torch.stack([dataset[i][0] for i in range(40)])
    assert torch.equal(torch.cat(batches), expected)
    with pytest.raises(ValueError, match="count and batch_size must be positive"):
        calibration_batches("digits", count=0)
    with pytest.raises(ValueError, match="count and batch_size must be positive"):
        calibration_batches("digits", batch_size=0)


def test_int8_argument_errors(tmp_path):
    model = _tiny_classifier()
    with pytest.raises(ValueError, match="runtime must be one of"):
        evaluate_int8(model, [], [torch.zeros(1, 1, 8, 8)], runtime="tensorrt")
    with pytest.raises(ValueError, match="calibration must hold at least one input batch"):
        evaluate_int8(model, [], [])
    with pytest.raises(ValueError, match="batches held no images"):
        evaluate_int8(model, [], [torch.randn(2, 1, 8, 8)], workdir=tmp_path)
    with pytest.raises(ValueError, match="need as many labels as images"):
        onnx_accuracy(tmp_path / "model.onnx", torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_change_is_int8_minus_fp32():
    e = Int8Evaluation(runtime="onnxruntime", images=10, fp32_top1=0.9, int8_top1=0.8, agreement=0.85,
                       calibration_images=4, fp32_bytes=100, int8_bytes=40, export_max_abs_diff=0.0)
    assert e.change == pytest.approx(-0.1) and e.to_dict()["change"] == pytest.approx(-0.1)
