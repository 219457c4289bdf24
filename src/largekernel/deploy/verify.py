"""Run exported models in their runtimes and compare them with PyTorch.

A *runtime* is a callable ``f(x: torch.Tensor) -> torch.Tensor`` built from an exported file by
:func:`load_runtime`: onnxruntime for ONNX, OpenVINO's CPU plugin for OpenVINO IR,
``torch.jit.load`` for TorchScript and ``torch.export.load`` for ExportedPrograms.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "Check", "VerificationError", "load_runtime", "compare", "onnx_op_types", "check_standard_onnx",
    "STANDARD_ONNX_DOMAINS",
]

logger = logging.getLogger(__name__)

# the default ONNX operator set and its ML extension: what every ONNX runtime implements
STANDARD_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

Runtime = Callable[[torch.Tensor], torch.Tensor]


class VerificationError(RuntimeError):
    """An exported model disagrees with PyTorch, fails to run, or uses non-standard operators."""


@dataclass
class Check:
    """One comparison of a runtime's output with PyTorch's.

    Attributes:
        runtime: ``"onnxruntime"``, ``"openvino"``, ``"torch.jit"`` or ``"torch.export"``.
        inputs: ``"random"`` or ``"real"``.
        shape: Input shape.
        max_abs_diff: Largest absolute difference of the outputs.
        max_rel_diff: ``max_abs_diff`` divided by the largest absolute PyTorch output.
    """

    runtime: str
    inputs: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _onnxruntime(path: Path) -> Runtime:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().numpy()})[0])

    return run


def _openvino(path: Path, precision: str = "f32") -> Runtime:
    import openvino as ov

    core = ov.Core()
    # OpenVINO's CPU plugin silently computes in bf16 on CPUs that support it; f32 keeps the
    # comparison (and the benchmark) about the same arithmetic as PyTorch's
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": _threads(), "NUM_STREAMS": 1}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled(x.detach().cpu().float().numpy())[0].copy())

    return run


def _torchscript(path: Path) -> Runtime:
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run


def _exported_program(path: Path) -> Runtime:
    module = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run


_LOADERS = {
    "onnx": ("onnxruntime", _onnxruntime),
    "openvino": ("openvino", _openvino),
    "torchscript": ("torch.jit", _torchscript),
    "exported-program": ("torch.export", _exported_program),
}


def load_runtime(fmt: str, path: str | os.PathLike) -> tuple[str, Runtime]:
    """Load an exported file into its runtime.

    Args:
        fmt: One of ``"onnx"``, ``"openvino"``, ``"torchscript"``, ``"exported-program"``.
        path: The exported file (``.xml`` for OpenVINO, with its ``.bin`` beside it).

    Returns:
        ``(runtime name, callable)``; the callable maps a float32 tensor to the output tensor.

    Raises:
        ValueError: Unknown format.

    Example:
        >>> import torch, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> torch.jit.save(torch.jit.trace(torch.nn.Conv2d(1, 1, 3), torch.ones(1, 1, 4, 4)), p)
        >>> name, run = load_runtime("torchscript", p)
        >>> tuple(run(torch.ones(1, 1, 4, 4)).shape)
        (1, 1, 2, 2)
    """
    try:
        name, loader = _LOADERS[fmt]
    except KeyError:
        raise ValueError(f"format must be one of {sorted(_LOADERS)}, got {fmt!r}") from None
    return name, loader(Path(path))


def compare(
    runtime: Runtime,
    reference: torch.nn.Module,
    x: torch.Tensor,
    *,
    runtime_name: str,
    inputs: str,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    chunk: int | None = None,
) -> Check:
    """Run ``x`` through ``runtime`` and ``reference`` and check that they agree.

    Args:
        runtime: From :func:`load_runtime`.
        reference: The PyTorch model (eval mode).
        x: Input batch.
        runtime_name: For the report.
        inputs: ``"random"`` or ``"real"``, for the report.
        rtol: Allowed difference relative to the largest absolute reference output.
        atol: Allowed absolute difference.
        chunk: Feed the runtime at most this many samples at a time (a static batch size).

    Returns:
        The :class:`Check`.

    Raises:
        VerificationError: The runtime failed or its output differs by more than
            ``atol + rtol * max|reference|``.
    """
    with torch.no_grad():
        ref = reference(x)
    try:
        parts = [x] if chunk is None else list(x.split(chunk))
        out = torch.cat([runtime(p) for p in parts])
    except Exception as exc:  # runtimes raise their own exception types
        raise VerificationError(
            f"{runtime_name} failed on a {inputs} input of shape {tuple(x.shape)}: {str(exc).strip().splitlines()[0]}"
        ) from exc
    if out.shape != ref.shape:
        raise VerificationError(
            f"{runtime_name} returned shape {tuple(out.shape)}, PyTorch {tuple(ref.shape)} (input {tuple(x.shape)})"
        )
    scale = float(ref.abs().max())
    diff = float((out.float() - ref.float()).abs().max())
    check = Check(runtime_name, inputs, tuple(x.shape), diff, diff / scale if scale > 0 else diff)
    if not diff <= atol + rtol * scale:  # also catches NaN
        raise VerificationError(
            f"{runtime_name} output differs from PyTorch by {diff:.3g} (max |output| {scale:.3g}, "
            f"allowed {atol + rtol * scale:.3g}) on a {inputs} input of shape {tuple(x.shape)}"
        )
    return check


def onnx_op_types(path: str | os.PathLike) -> set[tuple[str, str]]:
    """The ``(domain, op_type)`` pairs of every node of an ONNX file, local functions included.

    Example:
        >>> # onnx_op_types("model.onnx") -> {("", "Conv"), ("", "Add"), ...}
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    for fn in model.functions:
        ops |= {(n.domain, n.op_type) for n in fn.node}
    return ops


def check_standard_onnx(path: str | os.PathLike) -> None:
    """Raise :class:`VerificationError` unless the file is valid ONNX of standard operators only.

    Local functions are flagged too: a runtime without function inlining cannot run them.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"invalid ONNX file: {str(exc).splitlines()[0]}") from exc
    foreign = sorted({f"{d}::{t}" for d, t in onnx_op_types(path) if d not in STANDARD_ONNX_DOMAINS})
    if foreign or model.functions:
        names = foreign or sorted(f.name for f in model.functions)
        raise VerificationError(f"the ONNX graph uses non-standard operators or functions: {', '.join(names)}")
