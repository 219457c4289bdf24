"""Inference runtimes for a deploy-form model, as callables to time (``largekernel bench deploy``).

Every runner computes the same function (checked against PyTorch eager before timing):

* ``eager`` -- PyTorch, every convolution PyTorch's own, NCHW (what reference code runs).
* ``engine`` -- PyTorch with every convolution on largekernel's engine (:func:`largekernel.accelerate`).
* ``compile`` -- ``torch.compile`` of the eager model (Inductor, CPU).
* ``onnxruntime`` -- the verified ONNX export in onnxruntime's CPU provider.
* ``openvino`` -- the verified OpenVINO IR on OpenVINO's CPU plugin, f32 precision.

All use the same number of threads (``torch.get_num_threads()``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["RUNTIMES", "build_runner", "runtime_available"]

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "engine", "compile", "onnxruntime", "openvino")

Runner = Callable[[torch.Tensor], torch.Tensor]


def runtime_available(name: str) -> bool:
    """Whether the optional package behind runtime ``name`` is installed."""
    import importlib.util

    package = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(name)
    return package is None or importlib.util.find_spec(package) is not None


def _torch_runner(model: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def build_runner(name: str, deploy: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Runner:
    """A callable running ``deploy`` (eval, float32, CPU) on runtime ``name``.

    Args:
        name: One of :data:`RUNTIMES`.
        deploy: The reparameterised model.
        example: An input batch (its per-sample shape is the one exported; the batch is dynamic).
        workdir: Where exported files go.

    Raises:
        ValueError: Unknown runtime.
        ImportError: The runtime's package is missing.

    Example:
        >>> import torch, tempfile
        >>> net = torch.nn.Conv2d(4, 4, 7, padding=3, groups=4).eval()
        >>> run = build_runner("engine", net, torch.randn(2, 4, 16, 16), tempfile.mkdtemp())
        >>> tuple(run(torch.randn(2, 4, 16, 16)).shape)
        (2, 4, 16, 16)
    """
    from largekernel.nn.acceleration import accelerate, to_torch_convs

    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {name!r}")
    plain = to_torch_convs(copy.deepcopy(deploy)).eval()
    if name == "eager":
        return _torch_runner(plain)
    if name == "engine":
        return _torch_runner(accelerate(plain))
    if name == "compile":
        # dynamic=False: the benchmark calls one shape per runner, and static shapes let Inductor
        # specialise; recompiling per batch size is what a deployment would do too
        return _torch_runner(torch.compile(plain, dynamic=False))
    from largekernel.deploy.export import export
    from largekernel.deploy.verify import load_runtime

    fmt = "onnx" if name == "onnxruntime" else "openvino"
    suffix = ".onnx" if fmt == "onnx" else ".xml"
    # the TorchScript-based exporter is much faster to run and gives the same operators here
    result = export(deploy, Path(workdir) / f"model{suffix}", fmt, input_size=tuple(example.shape[1:]),
                    dynamo=False)
    return load_runtime(fmt, result.path)[1]
