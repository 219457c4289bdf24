"""Post-training int8 quantisation of exported deploy-form models (ONNX Runtime, static).

Static quantisation computes activation ranges once, from calibration batches of real data, and
stores int8 weights with one scale per output channel (per-channel weights keep the many small
depthwise filters of a large-kernel model from sharing one coarse scale). The result is a QDQ
ONNX file (QuantizeLinear/DequantizeLinear pairs around the int8 operators), which onnxruntime
executes with int8 kernels and any ONNX runtime can read.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["quantize_onnx", "onnx_accuracy", "calibration_batches", "Int8Evaluation", "evaluate_int8",
           "INT8_RUNTIMES"]

#: runtimes :func:`evaluate_int8` can quantise for
INT8_RUNTIMES = ("onnxruntime",)

logger = logging.getLogger(__name__)


def calibration_batches(
    spec: str = "digits", *, split: str = "train", image_size: int | None = None, count: int = 128,
    batch_size: int = 32, root: str | None = None,
) -> list[torch.Tensor]:
    """The first ``count`` (unaugmented) images of a data set, in batches, for calibration.

    Example:
        >>> [b.shape[0] for b in calibration_batches("digits", image_size=16, count=40, batch_size=32)]
        [32, 8]
    """
    from largekernel.data import build_dataset

    if count < 1 or batch_size < 1:
        raise ValueError(f"count and batch_size must be positive, got {count} and {batch_size}")
    dataset = build_dataset(spec, split, image_size=image_size, augment=False, root=root)
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    return list(images.split(batch_size))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: ``get_next()`` -> feed dict or None."""

    def __init__(self, input_name: str, batches: Iterable[torch.Tensor | np.ndarray]):
        self._feeds = iter([{input_name: np.asarray(b, dtype=np.float32)} for b in batches])

    def get_next(self):
        return next(self._feeds, None)


def _quiet_axis_warnings(record: logging.LogRecord) -> bool:
    """Drop onnxruntime's root-logger warning for 1-D (norm) weights it keeps per tensor anyway.

    With ``per_channel=True`` it logs "Axis 1 is out-of-range for weight ... with rank 1" once per
    LayerNorm/BatchNorm weight (such a weight has no output-channel axis; the quantisation goes on
    without one), which would bury the useful messages.
    """
    return not (record.getMessage().startswith("Axis ") and "is out-of-range for weight" in record.getMessage())


def quantize_onnx(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    calibration: Iterable[torch.Tensor | np.ndarray],
    *,
    per_channel: bool = True,
    method: str = "minmax",
) -> Path:
    """Quantise an fp32 ONNX model to int8 (static, QDQ format), written atomically.

    Args:
        model_path: The fp32 ONNX file (e.g. from :func:`largekernel.export`).
        output_path: Where to write the int8 model.
        calibration: Input batches (real data, normalised as for the model).
        per_channel: One weight scale per output channel (default) instead of per tensor.
        method: Activation-range calibration: ``"minmax"``, ``"entropy"`` or ``"percentile"``.

    Returns:
        ``output_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Unknown method, no calibration data, or an unreadable model.

    Example:
        >>> # quantize_onnx("m.onnx", "m.int8.onnx", calibration_batches("digits"))
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    model_path, output_path = Path(model_path), Path(output_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path}")
    batches = [b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b for b in calibration]
    if not batches:
        raise ValueError("calibration must hold at least one input batch")
    try:
        input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    except Exception as exc:
        raise ValueError(f"{model_path} is not a readable ONNX model: {exc}") from None
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output_path.name}.", dir=output_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference + graph cleanup, as ONNX Runtime recommends before quantising
            quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # pragma: no cover - depends on the graph; quantising still works
            logger.info("quantisation pre-processing skipped: %s", exc)
            prepared = model_path
        target = Path(tmp) / output_path.name
        root = logging.getLogger()
        root.addFilter(_quiet_axis_warnings)
        try:
            quantize_static(
                str(prepared), str(target), _Reader(input_name, batches),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
            )
        finally:
            root.removeFilter(_quiet_axis_warnings)
        os.replace(target, output_path)
    logger.info("wrote int8 model %s (%s calibration batches)", output_path, len(batches))
    return output_path


def onnx_accuracy(
    model_path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 64
) -> float:
    """Top-1 accuracy of an ONNX classifier in onnxruntime.

    Example:
        >>> # onnx_accuracy("m.int8.onnx", x_test, y_test) -> 0.97
    """
    from largekernel.deploy.verify import load_runtime

    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {images.shape[0]} and {labels.shape[0]}")
    _, run = load_runtime("onnx", model_path)
    correct = 0
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size)):
        correct += int((run(xb).argmax(1) == yb).sum())
    return correct / images.shape[0]


@dataclass
class Int8Evaluation:
    """Top-1 of a model's fp32 ONNX export and of its int8 quantisation on the same images.

    Attributes:
        runtime: The int8 runtime (``"onnxruntime"``).
        images: Number of evaluated images.
        fp32_top1: Top-1 of the fp32 ONNX model (the deploy form, as exported and verified).
        int8_top1: Top-1 of the int8 model.
        agreement: Share of images where both models predict the same class.
        calibration_images: Images used to calibrate the activation ranges.
        fp32_bytes, int8_bytes: File sizes of the two ONNX models.
        export_max_abs_diff: Largest output difference of the fp32 export against PyTorch.
    """

    runtime: str
    images: int
    fp32_top1: float
    int8_top1: float
    agreement: float
    calibration_images: int
    fp32_bytes: int
    int8_bytes: int
    export_max_abs_diff: float

    @property
    def change(self) -> float:
        """``int8_top1 - fp32_top1`` (a fraction; multiply by 100 for points)."""
        return self.int8_top1 - self.fp32_top1

    def to_dict(self) -> dict:
        return {**asdict(self), "change": self.change}


def _predict(run, x: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Class predictions of an onnxruntime callable; a fixed export batch size is padded to."""
    if batch is None or x.shape[0] == batch:
        return run(x).argmax(1)
    preds = []
    for chunk in x.split(batch):
        n = chunk.shape[0]
        if n < batch:  # repeat the last image: its extra predictions are dropped
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])])
        preds.append(run(chunk).argmax(1)[:n])
    return torch.cat(preds)


def evaluate_int8(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    calibration: Iterable[torch.Tensor],
    *,
    runtime: str = "onnxruntime",
    workdir: str | os.PathLike | None = None,
    method: str = "minmax",
) -> Int8Evaluation:
    """Export ``model`` (fp32 ONNX, verified), quantise it to int8 and evaluate both on ``batches``.

    The model is exported in its deploy form with :func:`largekernel.export` (the TorchScript-based
    exporter: quick, batch size dynamic), quantised with :func:`quantize_onnx` (static, per-channel
    int8 weights, uint8 activations calibrated on ``calibration``) and both files are run in
    onnxruntime on the same ``(images, labels)`` batches.

    Args:
        model: A classifier (training or deploy form; not modified).
        batches: ``(images, labels)`` batches of the evaluation split (e.g. a ``DataLoader``).
        calibration: Input batches for the activation ranges (real, normalised images; use other
            images than the evaluated ones, e.g. the training split).
        runtime: The int8 runtime; one of :data:`INT8_RUNTIMES`.
        workdir: Directory for ``model.onnx`` and ``model.int8.onnx`` (default: a temporary
            directory, deleted afterwards).
        method: Activation calibration (see :func:`quantize_onnx`).

    Returns:
        An :class:`Int8Evaluation`.

    Raises:
        ValueError: Unknown runtime, no calibration data or no evaluation images.

    Example:
        >>> # evaluate_int8(model, test_loader, calibration_batches("digits", image_size=32)).change
    """
    from largekernel.deploy.export import export
    from largekernel.deploy.verify import load_runtime

    if runtime not in INT8_RUNTIMES:
        raise ValueError(f"runtime must be one of {INT8_RUNTIMES}, got {runtime!r}")
    calibration = [torch.as_tensor(b).float() for b in calibration]
    if not calibration:
        raise ValueError("calibration must hold at least one input batch")
    with tempfile.TemporaryDirectory(prefix="largekernel-int8-") as tmp:
        out = Path(workdir) if workdir is not None else Path(tmp)
        sample = calibration[0]
        result = export(model, out / "model.onnx", "onnx", input_size=tuple(sample.shape[1:]),
                        dynamo=False, real_inputs=sample[:8])
        # a batch dim the runtime could not keep dynamic is padded to (see _predict)
        fixed_batch = None if 0 in result.dynamic_dims else result.input_shape[0]
        int8_path = quantize_onnx(result.path, out / "model.int8.onnx", calibration, method=method)
        _, run32 = load_runtime("onnx", result.path)
        _, run8 = load_runtime("onnx", int8_path)
        count = correct32 = correct8 = same = 0
        for x, y in batches:
            x, y = torch.as_tensor(x).float().cpu(), torch.as_tensor(y).cpu()
            p32, p8 = _predict(run32, x, fixed_batch), _predict(run8, x, fixed_batch)
            count += y.shape[0]
            correct32 += int((p32 == y).sum())
            correct8 += int((p8 == y).sum())
            same += int((p32 == p8).sum())
        if count == 0:
            raise ValueError("batches held no images: nothing to evaluate")
        report = Int8Evaluation(
            runtime=runtime, images=count, fp32_top1=correct32 / count, int8_top1=correct8 / count,
            agreement=same / count, calibration_images=sum(b.shape[0] for b in calibration),
            fp32_bytes=result.path.stat().st_size, int8_bytes=int8_path.stat().st_size,
            export_max_abs_diff=result.max_abs_diff)
    logger.info("int8 (%s): top-1 %.4f -> %.4f on %d images", runtime, report.fp32_top1, report.int8_top1, count)
    return report
