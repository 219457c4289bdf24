"""`largekernel evaluate --int8 onnxruntime`: float and int8 accuracy on the same test images."""

from __future__ import annotations

import json

import pytest
import torch

from largekernel.cli import main
from largekernel.deploy import export, onnx_accuracy, quantize_onnx
from largekernel.deploy.quantize import calibration_batches, evaluate_int8
from largekernel.train.loading import load_trained_model
from largekernel.data import build_dataset

pytest.importorskip("onnxruntime", reason="onnxruntime is needed for int8 quantisation")

_KWARGS = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "kernel_sizes": [[3], [13], [7], [3]]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny UniRepLKNet trained for 2 epochs on 512 bundled digits (32 px): well above chance."""
    out = tmp_path_factory.mktemp("int8") / "run"
    assert main(["train", "--model", "unireplknet_a", "--model-kwargs", json.dumps(_KWARGS), "--data", "digits",
                 "--image-size", "32", "--epochs", "2", "--batch-size", "32", "--train-subset", "512",
                 "--eval-subset", "64", "--threads", "1", "--quiet", "--no-plots", "--output", str(out)]) == 0
    return out


def _test_split(limit: int):
    ds = build_dataset("digits", "test", image_size=32, augment=False)
    x = torch.stack([ds[i][0] for i in range(limit)])
    return x, torch.tensor([ds[i][1] for i in range(limit)])


def test_evaluate_reports_float_and_int8_accuracy(run_dir, tmp_path, capsys):
    n = 120
    args = ["evaluate", str(run_dir), "--limit", str(n), "--batch-size", "50"]  # a partial last batch
    assert main([*args, "--output", str(tmp_path / "float"), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--int8", "onnxruntime", "--calibration-batches", "2", "--output", str(tmp_path / "q")]) == 0
    text = capsys.readouterr().out
    doc = json.loads((tmp_path / "q" / "eval.json").read_text())
    q = doc["int8"]
    assert doc["top1"] == plain["top1"] == q["float_top1"] and q["images"] == doc["count"] == n
    assert plain["top1"] > 0.5  # a trained model: the comparison means something
    assert q["calibration_images"] == 64 and q["int8_bytes"] < q["fp32_bytes"]
    # the fp32 export predicts like PyTorch (a near-tie may flip one image)
    assert abs(q["fp32_top1"] - doc["top1"]) <= 1 / n + 1e-12
    assert abs(q["int8_top1"] - q["fp32_top1"]) <= 1 - q["agreement"] + 1e-12
    assert q["change_vs_float"] == pytest.approx(q["int8_top1"] - doc["top1"])
    # the text report names both numbers and the change
    assert f"int8 (onnxruntime): top-1 {100 * q['int8_top1']:.2f} % vs float {100 * doc['top1']:.2f} %" in text
    assert f"change {100 * q['change_vs_float']:+.2f} points" in text
    # independent reference: the same pipeline from its parts (export, quantise on the first 64
    # training images, onnxruntime accuracy) gives the same int8 accuracy
    model = load_trained_model(run_dir).model
    fp32 = export(model, tmp_path / "ref" / "m.onnx", input_size=32, dynamo=False).path
    calib = calibration_batches("digits", image_size=32, count=64, batch_size=32)
    int8 = quantize_onnx(fp32, tmp_path / "ref" / "m.int8.onnx", calib)
    x, y = _test_split(n)
    assert q["int8_top1"] == pytest.approx(onnx_accuracy(int8, x, y))
    assert q["fp32_top1"] == pytest.approx(onnx_accuracy(fp32, x, y))


def test_fixed_batch_exports_are_padded(run_dir):
    """A runtime whose batch size is fixed still sees every image once (the last batch is padded)."""
    from largekernel.deploy.quantize import _predict

    calls = []

    def run(x):
        calls.append(x.shape[0])
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long() % 3, 3).float()

    x = torch.arange(7.0).view(7, 1, 1, 1)
    assert _predict(run, x, 3).tolist() == [0, 1, 2, 0, 1, 2, 0] and calls == [3, 3, 3]


def test_bad_int8_options_exit_2(run_dir, tmp_path, caplog):
    with pytest.raises(SystemExit) as exc:  # argparse: not a runtime we quantise for
        main(["evaluate", str(run_dir), "--int8", "tensorrt"])
    assert exc.value.code == 2
    assert main(["evaluate", str(run_dir), "--output", str(tmp_path / "e"), "--int8", "onnxruntime",
                 "--calibration-batches", "0"]) == 2
    assert "calibration_batches must be >= 1" in caplog.text
    assert not (tmp_path / "e").exists()


def test_evaluate_int8_needs_calibration_and_images():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    with pytest.raises(ValueError, match="calibration"):
        evaluate_int8(model, [], [])
    with pytest.raises(ValueError, match="runtime"):
        evaluate_int8(model, [], [torch.zeros(2, 1, 8, 8)], runtime="tensorrt")
