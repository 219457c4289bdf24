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
from pathlib import Path

import numpy as np
import torch

__all__ = ["quantize_onnx", "onnx_accuracy", "calibration_batches"]

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
        quantize_static(
            str(prepared), str(target), _Reader(input_name, batches),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
        )
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
