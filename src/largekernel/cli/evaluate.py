"""``largekernel evaluate CHECKPOINT``: top-1/top-5, per-class accuracy, confusion matrix (JSON + PNG).

``--compile`` evaluates ``torch.compile(model)`` (the engine inside); ``--int8 onnxruntime`` also
exports the model, quantises it to int8 on training images and reports the float and int8 top-1
and the change on the same test images (``eval.json`` key ``int8``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint on a data set",
        description="Evaluate a run directory, training checkpoint (.pt) or deploy checkpoint "
                    "(.safetensors). The data set, image size and normalisation come from the "
                    "checkpoint's metadata unless overridden.")
    parser.add_argument("checkpoint", help="run directory, training checkpoint or .safetensors")
    parser.add_argument("--data", help="data set spec (default: the one the model was trained on)")
    parser.add_argument("--data-root", help="root directory for data sets that need one")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--image-size", type=int, help="override the input resolution")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None,
                        help="use the EMA weights of a training checkpoint")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--output", help="directory for eval.json and confusion_matrix.png "
                                         "(default: <checkpoint dir>/eval-<split>)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    parser.add_argument("--allow-large", "--force", dest="allow_large", action="store_true",
                        help="run even if the memory estimate exceeds the available memory")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model first (the engine inside; the first batches compile)")
    parser.add_argument("--int8", choices=("onnxruntime",), default=None,
                        help="also export the model to ONNX, quantise it to int8 (static, per-channel, "
                             "calibrated on training images) and report both accuracies and the change")
    parser.add_argument("--calibration-batches", type=int, default=8,
                        help="with --int8: batches of 32 training images for calibration (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader, Subset

    from largekernel.data import build_dataset
    from largekernel.train.loading import load_trained_model
    from largekernel.train.plots import plot_confusion
    from largekernel.train.trainer import resolve_device

    from largekernel.tasks.segmentation.commands import is_segmentation_checkpoint, run_evaluate

    if is_segmentation_checkpoint(args.checkpoint):  # per-class Dice/IoU instead of top-1
        if getattr(args, "int8", None) or getattr(args, "compile", False):
            raise ValueError("--int8 and --compile are for classifier checkpoints, not segmentation ones")
        return run_evaluate(args)
    from largekernel.config_schema import EvaluateOptions, validate_model
    from largekernel.errors import OutputError
    from largekernel.utils.memory import check_inference_memory
    from largekernel.utils.output import check_writable, write_output

    opts = validate_model(EvaluateOptions, {k: getattr(args, k, None) for k in
                                            ("batch_size", "limit", "image_size", "split", "amp", "device",
                                             "compile", "int8", "calibration_batches")
                                            if getattr(args, k, None) is not None})
    device = resolve_device(args.device)
    loaded = load_trained_model(args.checkpoint, use_ema=args.use_ema, device=device)
    info = loaded.data_info or {}
    spec = args.data or info.get("spec") or info.get("name")
    if not spec:
        raise ValueError(f"{loaded.source} records no data set; pass --data")
    out = Path(args.output) if args.output else loaded.source.parent / f"eval-{args.split}"
    check_writable(out, files=("eval.json", "confusion_matrix.png"))  # before minutes of evaluation
    image_size = opts.image_size or (info.get("image_size") if not args.data else None)
    if isinstance(image_size, int):
        in_chans = int(info.get("in_chans") or 3)
        check_inference_memory(loaded.model_config, (opts.batch_size, in_chans, image_size, image_size),
                               f"evaluating at {image_size}x{image_size} px, batch {opts.batch_size}",
                               allow_large=args.allow_large, device=device)
    dataset = build_dataset(spec, args.split, image_size=image_size, augment=False,
                            root=args.data_root)
    ds_info = dataset.info
    num_classes = int(info.get("num_classes") or ds_info.num_classes)
    if ds_info.num_classes != num_classes:
        raise ValueError(f"data set {spec!r} has {ds_info.num_classes} classes but the model was "
                         f"trained on {num_classes}")
    if opts.limit is not None:
        dataset = Subset(dataset, range(min(opts.limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"the {args.split} split of {spec!r} has no samples: nothing to evaluate")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                        generator=torch.Generator().manual_seed(0))
    metrics = _evaluate(loaded.model, loader, num_classes, device, args.amp, compile_model=opts.compile)
    class_names = list(info.get("class_names") or ds_info.class_names)
    result = {"checkpoint": str(loaded.source), "kind": loaded.kind, "model": loaded.model_config,
              "data": spec, "split": args.split, "class_names": class_names, **metrics}
    if opts.int8:
        result["int8"] = _int8(loaded.model, loader, metrics, spec, image_size, args.data_root, opts)
    write_output(out / "eval.json", lambda f: f.write(json.dumps(result, indent=2).encode("utf-8")))
    try:
        plot_confusion(metrics["confusion_matrix"], class_names, out / "confusion_matrix.png",
                       title=f"{spec} {args.split}")
    except OSError as err:  # eval.json is already complete; say which file is missing
        raise OutputError(f"cannot write {out / 'confusion_matrix.png'}: {err.strerror or err}",
                          path=out / "confusion_matrix.png") from None
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        lines = [f"{loaded.source} on {spec} [{args.split}], {metrics['count']} images",
                 f"  top-1 {100 * metrics['top1']:.2f} %   top-5 {100 * metrics['top5']:.2f} %   "
                 f"loss {metrics['loss']:.4f}",
                 "  per class: " + ", ".join(
                     f"{name} {100 * acc:.1f}%" if acc is not None else f"{name} -"
                     for name, acc in zip(class_names, metrics["per_class_accuracy"])),
                 f"  written: {out / 'eval.json'}, {out / 'confusion_matrix.png'}"]
        if "int8" in result:
            q = result["int8"]
            lines.insert(-1, f"  int8 ({q['runtime']}): top-1 {100 * q['int8_top1']:.2f} % vs float "
                             f"{100 * q['float_top1']:.2f} % (change {100 * q['change_vs_float']:+.2f} points; "
                             f"fp32 ONNX {100 * q['fp32_top1']:.2f} %, same prediction on "
                             f"{100 * q['agreement']:.1f} % of images, {q['calibration_images']} calibration "
                             f"images, {q['fp32_bytes'] / 1e6:.2f} -> {q['int8_bytes'] / 1e6:.2f} MB)")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _evaluate(model, loader, num_classes: int, device, amp: str, *, compile_model: bool) -> dict:
    """:func:`evaluate_model`, optionally on ``torch.compile(model)`` (engine inside)."""
    from largekernel.train.trainer import compile_model as compile_fn, evaluate_model

    if not compile_model:
        return evaluate_model(model, loader, num_classes, device, amp)
    from largekernel.ops.custom_op import compile_engine_enabled, set_compile_engine

    before = compile_engine_enabled()
    try:  # accelerate(compile=True) converts `model` in place (same weights) and wraps it
        return evaluate_model(compile_fn(model, engine=True), loader, num_classes, device, amp)
    finally:  # the switch is process-wide: leave it as it was for in-process callers
        set_compile_engine(before)


def _int8(model, loader, metrics: dict, spec: str, image_size, data_root, opts) -> dict:
    """Quantise ``model`` to int8 and evaluate it on ``loader``; the float model's top-1 is ``metrics``'."""
    from largekernel.deploy.quantize import calibration_batches, evaluate_int8

    # calibration on the training split: never on the images the accuracy is measured on
    calibration = calibration_batches(spec, split="train", image_size=image_size,
                                      count=32 * opts.calibration_batches, batch_size=32, root=data_root)
    model = model.to("cpu")  # onnx export and onnxruntime run on the CPU
    report = evaluate_int8(model, loader, calibration, runtime=opts.int8).to_dict()
    if report["images"] != metrics["count"]:  # the same loader: a mismatch would be a bug
        raise RuntimeError(f"int8 evaluated {report['images']} images, the float model {metrics['count']}")
    return {**report, "float_top1": metrics["top1"], "change_vs_float": report["int8_top1"] - metrics["top1"]}
