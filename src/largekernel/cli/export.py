"""``largekernel export CHECKPOINT|MODEL --format F --output PATH``: verified deployment export.

The model is reparameterised, exported, run in its runtime (onnxruntime; OpenVINO too for
``--format openvino``) on random inputs and, when the checkpoint records its data set, on real
images, and the largest difference against PyTorch is printed. ``--quantize int8`` (ONNX) also
writes an int8 model calibrated on the data set and prints the accuracy change.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "load_model_spec"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model (ONNX/OpenVINO/TorchScript/ExportedProgram), verified",
        description="Export the reparameterised (deploy) form of a run directory, checkpoint, "
                    "saved model directory or registered model name, and verify the file in its "
                    "runtime against PyTorch. Nothing is written if the export or check fails.")
    parser.add_argument("model", help="run directory, .pt/.safetensors checkpoint, model directory "
                                      "(config.json + model.safetensors), or a registered model name")
    parser.add_argument("--format", default="onnx",
                        help="onnx (default), openvino, torchscript or exported-program")
    parser.add_argument("--output", "-o", required=True, help="output file (suffix added if missing)")
    parser.add_argument("--input-size", help="example input size: S, H,W or C,H,W "
                                             "(default: the checkpoint's image size, else 224)")
    parser.add_argument("--batch-size", type=int, default=2, help="example batch size (>= 2)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    parser.add_argument("--static", action="store_true", help="fixed input shape (no dynamic dims)")
    parser.add_argument("--legacy-onnx", action="store_true",
                        help="use the TorchScript-based ONNX exporter instead of torch.export's")
    parser.add_argument("--model-kwargs", help="JSON options when MODEL is a registered name")
    parser.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None,
                        help="use the EMA weights of a training checkpoint")
    parser.add_argument("--data", help="data set for real-input checks and calibration "
                                       "(default: the one the checkpoint was trained on)")
    parser.add_argument("--quantize", choices=("int8",), help="also write an int8 ONNX model "
                        "(static, per-channel) next to OUTPUT and report the accuracy change")
    parser.add_argument("--calibration-size", type=int, default=256, help="images for int8 calibration")
    parser.add_argument("--limit", type=int, help="evaluate the accuracy change on N test images only")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _parse_sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--input-size must be integers like 224, 64,64 or 3,64,64; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"--input-size must be positive integers, got {text!r}")
    return sizes


def load_model_spec(spec: str, *, model_kwargs: str | None = None, use_ema: bool | None = None):
    """``(model, data_info)`` from a checkpoint path, a model directory or a registered name.

    Raises:
        ValueError: Not a checkpoint/directory/registered name, or an unreadable checkpoint.
    """
    from largekernel.models.registry import create_model, is_model

    path = Path(spec)
    kwargs: dict[str, Any] = {}
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"--model-kwargs must be a JSON object: {err}") from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"--model-kwargs must be a JSON object, got {model_kwargs!r}")
    if spec.startswith("local-dir:") or (path.is_dir() and (path / "config.json").is_file()):
        from largekernel.deploy.local_dir import load_local_dir

        model = load_local_dir(spec.removeprefix("local-dir:"), **kwargs)
        data = (getattr(model, "pretrained_cfg", {}) or {}).get("data")
        return model, data
    if path.exists():
        from largekernel.train.loading import load_trained_model

        loaded = load_trained_model(path, use_ema=use_ema)
        return loaded.model, loaded.data_info
    if is_model(spec):
        return create_model(spec, **kwargs), None
    raise ValueError(f"MODEL must be an existing checkpoint/run directory or a registered model name, "
                     f"got {spec!r} (see `largekernel info --list`)")


def _real_images(data_info: dict | None, spec: str | None, split: str, count: int, image_size: int | None):
    """``(images, labels)`` from the data set, or None when none is known."""
    import torch

    from largekernel.data import build_dataset

    info = data_info or {}
    spec = spec or info.get("spec") or info.get("name")
    if not spec:
        return None
    dataset = build_dataset(spec, split, image_size=image_size or info.get("image_size"), augment=False)
    n = min(count, len(dataset))
    images, labels = zip(*(dataset[i] for i in range(n)))
    return torch.stack(images), torch.as_tensor(labels)


def run(args: argparse.Namespace) -> int:
    from largekernel.deploy.export import FORMATS, export

    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    if args.quantize and args.format != "onnx":
        raise ValueError("--quantize int8 needs --format onnx")
    if args.calibration_size < 1:
        raise ValueError(f"--calibration-size must be positive, got {args.calibration_size}")
    sizes = _parse_sizes(args.input_size)
    model, data_info = load_model_spec(args.model, model_kwargs=args.model_kwargs, use_ema=args.use_ema)
    image_size = (data_info or {}).get("image_size")
    input_size = sizes if sizes is not None else image_size
    real = _real_images(data_info, args.data, "test", 8, sizes[-1] if sizes else None) if (
        data_info or args.data) else None
    result = export(model, args.output, args.format, input_size=input_size, batch_size=args.batch_size,
                    opset=args.opset, dynamic=not args.static, dynamo=not args.legacy_onnx,
                    real_inputs=real[0] if real is not None else None)
    doc: dict[str, Any] = result.to_dict()
    if args.quantize:
        doc["quantization"] = _quantize(result.path, data_info, args, sizes)
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    out = [f"wrote {', '.join(str(f) for f in result.files)} ({result.format}; input {list(result.input_shape)}, "
           f"dynamic dims {list(result.dynamic_dims) or 'none'}"
           f"{'; used the plain-PyTorch fallback' if result.fallback else ''})"]
    for c in result.checks:
        out.append(f"  {c.runtime:<13} {c.inputs:<6} input {list(c.shape)}: max |diff| {c.max_abs_diff:.3g} "
                   f"(relative {c.max_rel_diff:.3g})")
    out.append(f"largest difference against PyTorch: {result.max_abs_diff:.3g}")
    if "quantization" in doc:
        q = doc["quantization"]
        out.append(f"int8 model {q['path']}: top-1 {q['int8_accuracy']:.2%} vs fp32 {q['fp32_accuracy']:.2%} "
                   f"({q['accuracy_change']:+.2%}) on {q['images']} {q['data']} test images")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _quantize(fp32_path: Path, data_info: dict | None, args: argparse.Namespace, sizes) -> dict[str, Any]:
    from largekernel.deploy.quantize import onnx_accuracy, quantize_onnx

    spec = args.data or (data_info or {}).get("spec") or (data_info or {}).get("name")
    if not spec:
        raise ValueError("--quantize needs a data set for calibration: pass --data (e.g. digits)")
    side = sizes[-1] if sizes else None
    calib = _real_images(data_info, spec, "train", args.calibration_size, side)
    test = _real_images(data_info, spec, "test", args.limit or 10**9, side)
    assert calib is not None and test is not None
    int8_path = fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    quantize_onnx(fp32_path, int8_path, list(calib[0].split(32)))
    fp32_acc = onnx_accuracy(fp32_path, *test)
    int8_acc = onnx_accuracy(int8_path, *test)
    return {"path": str(int8_path), "data": spec, "images": int(test[0].shape[0]),
            "fp32_accuracy": fp32_acc, "int8_accuracy": int8_acc, "accuracy_change": int8_acc - fp32_acc}
