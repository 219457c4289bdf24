"""`largekernel export` and `largekernel bench deploy` from the command line, bad input included."""

from __future__ import annotations

import json

import pytest
import torch
from deploy_helpers import SMALL, small_model

import largekernel
from largekernel.cli import main
from largekernel.deploy import load_runtime, save_local_dir

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to verify exports")


def test_export_saved_model_prints_the_largest_difference(tmp_path, capsys):
    model = small_model("convnext_atto")
    save_local_dir(model, tmp_path / "saved")
    out = tmp_path / "out" / "m.onnx"
    code = main(["export", str(tmp_path / "saved"), "--output", str(out), "--input-size", "32",
                 "--legacy-onnx"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "largest difference against PyTorch" in text and "onnxruntime" in text
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(load_runtime("onnx", out)[1](x), ref, atol=1e-5, rtol=1e-4)


def test_export_registered_name_as_json(tmp_path, capsys):
    out = tmp_path / "m.pt"
    code = main(["export", "replknet_31b", "--format", "torchscript", "--output", str(out), "--input-size",
                 "32", "--model-kwargs", json.dumps({**SMALL["replknet_31b"], "num_classes": 3}), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["format"] == "torchscript" and doc["input_shape"] == [2, 3, 32, 32]
    assert doc["max_abs_diff"] < 1e-4 and out.is_file()


@pytest.mark.parametrize("args,message", [
    (["--format", "tflite"], "--format must be one of"),
    (["--input-size", "abc"], "--input-size"),
])
def test_bad_options_exit_2_without_output(args, message, tmp_path, caplog):
    out = tmp_path / "m.onnx"
    assert main(["export", "convnext_atto", "--output", str(out), *args]) == 2
    assert message in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_not_a_model_exits_2_without_output(tmp_path, caplog):
    junk = tmp_path / "notes.pt"
    junk.write_text("this is not a checkpoint")
    out = tmp_path / "m.onnx"
    assert main(["export", str(junk), "--output", str(out)]) == 2
    assert "notes.pt" in caplog.text
    assert main(["export", "no_such_model_xyz", "--output", str(out)]) == 2
    assert "registered model name" in caplog.text
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")
    assert main(["export", str(tmp_path / "state.pt"), "--output", str(out)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt", "state.pt"]


def test_unwritable_output_exits_2(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model_dir = tmp_path / "saved"
    save_local_dir(small_model("convnext_atto"), model_dir)
    assert main(["export", str(model_dir), "--output", str(blocker / "m.onnx"), "--input-size", "32"]) == 2
    assert "not a directory" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "saved"]


def test_quantize_needs_onnx_and_data(tmp_path, caplog):
    out = tmp_path / "m.pt"
    assert main(["export", "convnext_atto", "--format", "torchscript", "--output", str(out), "--quantize", "int8"]) == 2
    assert "--format onnx" in caplog.text and not out.exists()


def test_bench_deploy_smoke(tmp_path):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    code = main(["bench", "deploy", "--workloads", "dw13", "--runtimes", "eager,engine,onnxruntime",
                 "--batch-sizes", "1,2", "--layer-size", "16", "--layer-channels", "8", "--repeats", "1",
                 "--json", str(js), "--plot", str(png)])
    assert code == 0 and png.stat().st_size > 0
    doc = json.loads(js.read_text())
    assert [(e["workload"], e["batch"]) for e in doc["results"]] == [("dw13", 1), ("dw13", 2)]
    for entry in doc["results"]:
        assert set(entry["runtimes"]) == {"eager", "engine", "onnxruntime"}
        assert all(r["max_abs_diff"] < 1e-4 for r in entry["runtimes"].values())
        assert entry["speedup_vs_eager"]["eager"] == 1.0
        assert entry["fastest"] in entry["runtimes"]
        assert entry["engine_plan"]


def test_bench_deploy_bad_input():
    assert main(["bench", "deploy", "--runtimes", "tensorrt"]) == 2
    assert main(["bench", "deploy", "--workloads", "resnet50", "--runtimes", "eager"]) == 2
    assert main(["bench", "deploy", "--batch-sizes", "0"]) == 2


def test_export_function_is_public():
    assert "export" in dir(largekernel)
