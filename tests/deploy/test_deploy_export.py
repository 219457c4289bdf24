"""largekernel.export: every family round-trips through its runtime; atomic writes; bad input."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from deploy_helpers import SMALL, example_input, randomise_bn, small_model
from torch import nn

import largekernel
from largekernel.deploy import ExportError, export, load_runtime, onnx_op_types
from largekernel.deploy.verify import STANDARD_ONNX_DOMAINS
from largekernel.nn.conv import Conv2d
from largekernel.nn.dilated_reparam import DilatedReparamConv
from largekernel.nn.layers import LayerNorm2d, SqueezeExcite

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run exported ONNX models")
pytest.importorskip("onnx", reason="onnx is needed to export ONNX models")


def _training_form_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unfused model's output: an independent reference for the fused + exported graph."""
    with torch.no_grad():
        return model(x)


def _assert_close(out: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = float(ref.abs().max())
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= 1e-5 + rtol * scale


# two families run in the slow suite only: their building blocks are covered by the others
_DEFAULT_FAMILIES = ("convnext_atto", "unireplknet_a", "replknet_31b", "lsnet_t", "sgconv_seq_tiny")


@pytest.mark.parametrize("name", [n if n in _DEFAULT_FAMILIES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(SMALL)])
def test_every_family_exports_to_standard_onnx(name, tmp_path):
    model = small_model(name)
    result = export(model, tmp_path / name, "onnx", input_size=None if "seq" in name else 32, dynamo=False)
    assert result.path == tmp_path / f"{name}.onnx" and result.path.is_file()
    assert {d for d, _ in onnx_op_types(result.path)} <= STANDARD_ONNX_DOMAINS
    assert result.checks and all(c.runtime == "onnxruntime" for c in result.checks)
    # the file in onnxruntime against the *training-form* model, on a fresh input
    _, run = load_runtime("onnx", result.path)
    x = example_input(name, batch=2, seed=7)
    _assert_close(run(x), _training_form_output(model, x))
    if "seq" not in name:
        # image models: batch and spatial sizes are dynamic (checked in the runtime by export())
        assert result.dynamic_dims == (0, 2, 3)
        x2 = example_input(name, batch=3, size=40, seed=8)
        _assert_close(run(x2), _training_form_output(model, x2))
    assert sorted(os.listdir(tmp_path)) == [f"{name}.onnx"]  # no temporary files left


def _tiny_lk_net() -> nn.Module:
    """Engine convs, a Dilated Reparam Block (fused on export), a channels-first LayerNorm and the
    rank-agnostic squeeze-excitation of UniRepLKNet (whose einsum form OpenVINO mis-broadcast at
    dynamic sizes)."""
    torch.manual_seed(0)
    net = nn.Sequential(Conv2d(3, 8, 3, padding=1), LayerNorm2d(8), DilatedReparamConv(8, 13), nn.GELU(),
                        SqueezeExcite(8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    randomise_bn(net)
    return net.eval()


def test_dynamo_exporter_dynamic_batch_and_size(tmp_path):
    # the torch.export-based exporter (PyTorch's default)
    model = _tiny_lk_net()
    result = export(model, tmp_path / "m.onnx", input_size=24)
    assert result.dynamic_dims == (0, 2, 3)
    assert {t for _, t in onnx_op_types(result.path)} >= {"Conv"}
    assert {d for d, _ in onnx_op_types(result.path)} <= STANDARD_ONNX_DOMAINS
    _, run = load_runtime("onnx", result.path)
    x = torch.randn(5, 3, 17, 29)
    _assert_close(run(x), _training_form_output(model, x))


def test_openvino_ir_round_trip(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is needed for --format openvino")
    model = _tiny_lk_net()
    result = export(model, tmp_path / "m.xml", "openvino", input_size=24, dynamo=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert {c.runtime for c in result.checks} == {"onnxruntime", "openvino"}
    assert result.dynamic_dims == (0, 2, 3)
    name, run = load_runtime("openvino", result.path)
    x = torch.randn(3, 3, 20, 28)
    _assert_close(run(x), _training_form_output(model, x))


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torch_formats_round_trip(fmt, tmp_path):
    model = _tiny_lk_net()
    result = export(model, tmp_path / "m", fmt, input_size=24)
    assert result.path.suffix == {"torchscript": ".pt", "exported-program": ".pt2"}[fmt]
    assert 0 in result.dynamic_dims
    _, run = load_runtime(fmt, result.path)
    x = torch.randn(3, 3, 24, 24)
    _assert_close(run(x), _training_form_output(model, x))


def test_real_inputs_are_checked(tmp_path):
    model = small_model("convnext_atto")
    real = torch.rand(6, 3, 32, 32)
    result = export(model, tmp_path / "m.onnx", input_size=32, dynamo=False, real_inputs=real)
    assert [c.inputs for c in result.checks].count("real") == 1
    assert [c.shape for c in result.checks if c.inputs == "real"] == [(6, 3, 32, 32)]


def test_source_model_is_left_untouched(tmp_path):
    model = small_model("unireplknet_a").train()
    state = copy.deepcopy(model.state_dict())
    export(model, tmp_path / "m.onnx", input_size=32, dynamo=False)
    assert model.training and state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


class _EngineOnly(nn.Module):
    """Fails under export unless its engine conv has become a plain torch conv."""

    def __init__(self):
        super().__init__()
        self.conv = Conv2d(2, 2, 5, padding=2, groups=2)

    def forward(self, x):
        if type(self.conv) is Conv2d and (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            raise RuntimeError("engine op cannot be exported")
        return self.conv(x)


def test_falls_back_to_plain_pytorch_convs(tmp_path):
    model = _EngineOnly().eval()
    result = export(model, tmp_path / "m.onnx", input_size=(2, 12, 12), dynamo=False)
    assert result.fallback
    _, run = load_runtime("onnx", result.path)
    x = torch.randn(2, 2, 12, 12)
    _assert_close(run(x), _training_form_output(model, x))
    assert type(model.conv) is Conv2d  # the caller's model still runs on the engine


class _Unexportable(nn.Module):
    def forward(self, x):
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            raise RuntimeError("cannot be traced")
        return x.flatten(1)[:, :3] @ torch.ones(3, 2)


def test_failed_export_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match="could not export"):
        export(_Unexportable(), tmp_path / "m.onnx", input_size=(3, 4, 4), dynamo=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_previous_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export(_Unexportable(), target, input_size=(3, 4, 4), dynamo=False)
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


def test_bad_arguments(tmp_path):
    model = small_model("convnext_atto")
    with pytest.raises(ValueError, match="format must be one of"):
        export(model, tmp_path / "m.x", "tflite")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        export(model, blocker / "sub" / "m.onnx", input_size=32)
    with pytest.raises(ValueError, match="is a directory"):
        export(model, tmp_path, input_size=32)
    with pytest.raises(ValueError, match=r"\.xml"):
        export(model, tmp_path / "m.onnx", "openvino")
    with pytest.raises(ValueError, match="channels"):
        export(model, tmp_path / "m.onnx", input_size=(1, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        export(model, tmp_path / "m.onnx", batch_size=1)
    with pytest.raises(TypeError, match="nn.Module"):
        export("convnext_atto", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_top_level_export_is_the_function():
    assert largekernel.export is export and callable(largekernel.export)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript", "exported-program"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_family_every_format(name, fmt, tmp_path):
    if fmt == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is needed for --format openvino")
    model = small_model(name)
    result = export(model, tmp_path / "m", fmt, input_size=None if "seq" in name else 48)
    x = example_input(name, batch=2, size=48, seed=11)
    _, run = load_runtime(fmt, result.path)
    _assert_close(run(x), _training_form_output(model, x))
    if fmt in ("onnx", "exported-program") and "seq" not in name:
        assert set(result.dynamic_dims) >= {0}
