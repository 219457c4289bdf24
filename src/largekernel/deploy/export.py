"""``largekernel.export``: a model's deploy form as ONNX / OpenVINO IR / TorchScript / ExportedProgram.

The model is reparameterised (on a copy), exported into a temporary directory beside the
destination, checked (standard operators only, for ONNX), run in its runtime on random and real
inputs and compared with PyTorch; only then are the files moved into place with ``os.replace``.
Any failure leaves no output file behind.

Robustness: the engine's convolutions already appear as plain ``aten.conv*`` under tracing and
export, but if the model as given cannot be exported or verified, the export is retried on a copy
with every engine convolution turned back into PyTorch's own (:func:`largekernel.to_torch_convs`).
Dynamic sizes: batch and spatial dims are exported as dynamic, each one kept only if the runtime
also agrees with PyTorch at a different size; otherwise the export is redone with fewer dynamic
dims (spatial, then batch), so "dynamic where the model allows" is a measured property.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from largekernel.deploy.verify import Check, VerificationError, check_standard_onnx, compare, load_runtime

__all__ = ["FORMATS", "ExportError", "ExportResult", "export", "to_deploy_form", "infer_input_shape"]

logger = logging.getLogger(__name__)

#: export format -> file suffix
FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt", "exported-program": ".pt2"}
DEFAULT_OPSET = 18
_DEFAULT_IMAGE_SIZE = {1: 1024, 2: 224, 3: 32}


class ExportError(ValueError):
    """The model could not be exported in the requested format (message says why)."""


@dataclass
class ExportResult:
    """What :func:`export` wrote and how it was checked.

    Attributes:
        path: The main output file.
        files: Every file written (OpenVINO writes ``.xml`` + ``.bin``).
        format: The export format.
        input_shape: Shape of the example input used for export, batch included.
        dynamic_dims: Input dims that accept other sizes (0 = batch), verified in the runtime.
        fallback: Whether the plain-PyTorch-convolution fallback was needed.
        checks: Every runtime-vs-PyTorch comparison made.
    """

    path: Path
    files: list[Path]
    format: str
    input_shape: tuple[int, ...]
    dynamic_dims: tuple[int, ...]
    fallback: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        """The largest absolute output difference over all checks."""
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "files": [str(f) for f in self.files], "format": self.format,
            "input_shape": list(self.input_shape), "dynamic_dims": list(self.dynamic_dims),
            "fallback": self.fallback, "max_abs_diff": self.max_abs_diff,
            "checks": [c.to_dict() for c in self.checks],
        }


def to_deploy_form(model: nn.Module) -> nn.Module:
    """A float32, CPU, eval-mode, reparameterised copy of ``model`` (``model`` is untouched).

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=3)
        >>> to_deploy_form(m).largekernel_form
        'deploy'
    """
    from largekernel.reparam import reparameterize

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    deploy = reparameterize(copy.deepcopy(model).float().cpu(), inplace=True)
    for p in deploy.parameters():
        p.requires_grad_(False)
    return deploy.eval()


def _first_conv(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module
    return None


def infer_input_shape(model: nn.Module, input_size: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """The per-sample input shape ``(C, *spatial)`` of ``model``.

    Sequence models (with ``in_chans`` and ``seq_len``) take ``(in_chans, L)``; other models take
    the channel count and spatial rank of their first convolution.

    Args:
        model: The model.
        input_size: ``None`` (defaults: 224 px for images, 32 for volumes, ``seq_len`` for
            sequences), one int (every spatial dim), the spatial sizes, or the full ``(C, *spatial)``.

    Raises:
        ValueError: Sizes that do not fit the model, or a model whose input cannot be inferred.

    Example:
        >>> import largekernel
        >>> infer_input_shape(largekernel.create_model("convnext_atto"), 64)
        (3, 64, 64)
    """
    if hasattr(model, "seq_len") and hasattr(model, "in_chans"):
        channels, nd, default = int(model.in_chans), 1, int(model.seq_len)
    else:
        conv = _first_conv(model)
        if conv is None:
            if input_size is None or isinstance(input_size, int):
                raise ValueError(
                    f"cannot infer the input shape of {type(model).__name__} (no convolution); "
                    "pass input_size as the full per-sample shape (C, *spatial)"
                )
            return tuple(int(s) for s in input_size)
        channels, nd = conv.in_channels, conv.weight.dim() - 2
        default = _DEFAULT_IMAGE_SIZE[nd]
    if input_size is None:
        sizes: list[int] = [default] * nd
    elif isinstance(input_size, int) and not isinstance(input_size, bool):
        sizes = [input_size] * nd
    else:
        sizes = [int(s) for s in input_size]
        if len(sizes) == nd + 1:
            if sizes[0] != channels:
                raise ValueError(f"input_size {tuple(sizes)} has {sizes[0]} channels, the model takes {channels}")
            sizes = sizes[1:]
        elif len(sizes) == 1:
            sizes = sizes * nd
        elif len(sizes) != nd:
            raise ValueError(
                f"input_size must give {nd} spatial size(s) (or (C, *spatial)) for this {nd}-D model, "
                f"got {tuple(sizes)}"
            )
    if any(s < 1 for s in sizes):
        raise ValueError(f"input_size must be positive, got {tuple(sizes)}")
    return (channels, *sizes)


# ----------------------------------------------------------------------------------------
# writers: (model, example, target file, dynamic dims, options) -> dynamic dims actually exported
# ----------------------------------------------------------------------------------------
def _dynamic_shapes(dims: Sequence[int]):
    return ({d: torch.export.Dim.AUTO for d in dims},) if dims else None


def _onnx_dynamic_dims(path: Path) -> tuple[int, ...]:
    import onnx

    graph_input = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    return tuple(i for i, d in enumerate(dims) if d.dim_param or not d.HasField("dim_value"))


def _movedim_symbolic(g, self, source, destination):
    """``aten::movedim`` for the TorchScript-based ONNX exporter, with negative dims normalised.

    PyTorch's own symbolic writes ``movedim(x, -1, 1)`` as ``Transpose(perm=[0, -1, 1, 2])``, which
    no runtime accepts; channels-last <-> channels-first moves like that are in every ConvNeXt-style
    block, so the export registers this corrected version for its duration.
    """
    from torch.onnx import symbolic_helper

    rank = symbolic_helper._get_tensor_rank(self)
    src = [int(v) % rank for v in symbolic_helper._parse_arg(source, "t").reshape(-1).tolist()]
    dst = [int(v) % rank for v in symbolic_helper._parse_arg(destination, "t").reshape(-1).tolist()]
    perm = [-1] * rank
    for s_dim, d_dim in zip(src, dst):
        perm[d_dim] = s_dim
    rest = iter(d for d in range(rank) if d not in src)
    perm = [p if p >= 0 else next(rest) for p in perm]
    return g.op("Transpose", self, perm_i=perm)


def _write_onnx(model: nn.Module, x: torch.Tensor, target: Path, dims: tuple[int, ...], opts: dict) -> tuple[int, ...]:
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=opts["opset"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters warn about many harmless things
        if opts["dynamo"]:
            torch.onnx.export(model, (x,), str(target), dynamo=True, external_data=False,
                              dynamic_shapes=_dynamic_shapes(dims), verbose=False, **kwargs)
        else:
            axes = {"input": {d: f"d{d}" for d in dims}, "output": {0: "batch"} if 0 in dims else {}}
            torch.onnx.register_custom_op_symbolic("aten::movedim", _movedim_symbolic, opts["opset"])
            try:
                torch.onnx.export(model, (x,), str(target), dynamo=False, dynamic_axes=axes if dims else None,
                                  **kwargs)
            finally:
                torch.onnx.unregister_custom_op_symbolic("aten::movedim", opts["opset"])
    check_standard_onnx(target)
    return _onnx_dynamic_dims(target)


def _write_openvino(model: nn.Module, x: torch.Tensor, target: Path, dims: tuple[int, ...], opts: dict) -> tuple[int, ...]:
    import openvino as ov

    onnx_file = target.with_suffix(".onnx")
    exported = _write_onnx(model, x, onnx_file, dims, opts)
    # the intermediate ONNX file is checked in onnxruntime too, then converted from that same graph
    opts["extra_checks"].append(("onnx", onnx_file))
    ov.save_model(ov.convert_model(str(onnx_file)), str(target), compress_to_fp16=False)
    return exported


def _write_torchscript(model: nn.Module, x: torch.Tensor, target: Path, dims: tuple[int, ...], opts: dict) -> tuple[int, ...]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape arithmetic
        traced = torch.jit.trace(model, (x,), check_trace=False)
    torch.jit.save(traced, str(target))
    return dims  # a trace has no declared sizes: verification at other sizes decides


def _write_exported_program(model: nn.Module, x: torch.Tensor, target: Path, dims: tuple[int, ...], opts: dict) -> tuple[int, ...]:
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(dims))
    torch.export.save(program, str(target))
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name not in
                       program.graph_signature.inputs_to_parameters and n.name not in
                       program.graph_signature.inputs_to_buffers and n.name not in
                       program.graph_signature.inputs_to_lifted_tensor_constants)
    shape = placeholder.meta["val"].shape
    return tuple(i for i, s in enumerate(shape) if isinstance(s, torch.SymInt))


_WRITERS = {
    "onnx": _write_onnx,
    "openvino": _write_openvino,
    "torchscript": _write_torchscript,
    "exported-program": _write_exported_program,
}


# ----------------------------------------------------------------------------------------
# the public function
# ----------------------------------------------------------------------------------------
def _check_format(fmt: str) -> str:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return fmt


def _check_output(path: str | os.PathLike, fmt: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a directory; give a file name")
    if path.suffix == "":
        path = path.with_suffix(FORMATS[fmt])
    if fmt == "openvino" and path.suffix != ".xml":
        raise ValueError(f"an OpenVINO output path must end in .xml (the .bin goes beside it), got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a directory; give a file name")
    # find the deepest existing ancestor: it must be a writable directory
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(path)!r}: directory {str(parent)!r} is not writable")
    return path


def _probe_inputs(
    x: torch.Tensor, dims: tuple[int, ...], gen: torch.Generator, max_size: int | None
) -> list[torch.Tensor]:
    """Inputs that differ from ``x`` in each dynamic dim: batch + 1, spatial sizes x 5/4 (larger,
    since a stride-32 network has a minimum input size), or x 3/4 where ``max_size`` bounds them."""
    if not dims:
        return []
    shape = list(x.shape)
    for d in dims:
        if d == 0:
            shape[d] += 1
        else:
            larger = shape[d] + max(1, shape[d] // 4)
            shape[d] = larger if max_size is None or larger <= max_size else max(1, (shape[d] * 3) // 4)
    return [torch.randn(shape, generator=gen)]


def _attempt(
    model: nn.Module, reference: nn.Module, fmt: str, x: torch.Tensor, target: Path,
    dims: tuple[int, ...], real: torch.Tensor | None, opts: dict,
) -> tuple[tuple[int, ...], list[Check]]:
    """Export once into ``target`` and verify; raise on any failure."""
    opts["extra_checks"] = []
    exported = _WRITERS[fmt](model, x, target, dims, opts)
    gen = torch.Generator().manual_seed(1)
    runtimes = [load_runtime(f, p) for f, p in opts["extra_checks"]] + [load_runtime(fmt, target)]
    checks: list[Check] = []
    tol = {"rtol": opts["rtol"], "atol": opts["atol"]}
    for name, run in runtimes:
        checks.append(compare(run, reference, x, runtime_name=name, inputs="random", **tol))
        for probe in _probe_inputs(x, exported, gen, getattr(reference, "seq_len", None)):
            checks.append(compare(run, reference, probe, runtime_name=name, inputs="random", **tol))
        if real is not None:
            real_in = real
            if any(real.shape[d] != x.shape[d] for d in range(1, x.dim()) if d not in exported):
                raise VerificationError(f"real inputs of shape {tuple(real.shape)} do not fit the exported "
                                        f"static shape {tuple(x.shape)}")
            chunk = None if 0 in exported else x.shape[0]
            if chunk is not None and real.shape[0] % chunk:
                real_in = real[: real.shape[0] - real.shape[0] % chunk] if real.shape[0] >= chunk else x
            checks.append(compare(run, reference, real_in, runtime_name=name, inputs="real", chunk=chunk, **tol))
    return exported, checks


def export(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",  # noqa: A002 - the natural name for the user
    *,
    input_size: int | Sequence[int] | None = None,
    batch_size: int = 2,
    opset: int | None = None,
    dynamic: bool = True,
    dynamo: bool = True,
    real_inputs: torch.Tensor | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> ExportResult:
    """Export the deploy form of ``model`` to ``path`` and verify it in its runtime.

    Args:
        model: Any model (training or deploy form); it is not modified.
        path: Output file; a missing suffix is added (``.onnx``, ``.xml``, ``.pt``, ``.pt2``).
        format: ``"onnx"``, ``"openvino"`` (IR ``.xml`` + ``.bin``), ``"torchscript"`` (traced)
            or ``"exported-program"`` (``torch.export``).
        input_size: Example input size, see :func:`infer_input_shape`.
        batch_size: Batch size of the example input (>= 2, so the batch dim can stay dynamic).
        opset: ONNX opset (default 18).
        dynamic: Export batch and spatial sizes as dynamic where the model allows.
        dynamo: Use the ``torch.export``-based ONNX exporter (PyTorch's default); ``False`` uses
            the TorchScript-based one.
        real_inputs: A batch of real (data set) inputs to verify on as well.
        rtol: Allowed output difference relative to the largest absolute PyTorch output.
        atol: Allowed absolute output difference.

    Returns:
        An :class:`ExportResult` with the checks made.

    Raises:
        ValueError: Unknown format, bad sizes, an output path that cannot be written.
        ExportError: The model could not be exported/verified, even in plain-PyTorch form.

    Example:
        >>> import largekernel, tempfile, os
        >>> m = largekernel.create_model("convnext_atto", num_classes=3, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
        >>> r = largekernel.export(m, os.path.join(tempfile.mkdtemp(), "m.onnx"), input_size=32, dynamo=False)
        >>> r.max_abs_diff < 1e-4
        True
    """
    fmt = _check_format(format)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2 (1 would fix the batch size), got {batch_size!r}")
    path = _check_output(path, fmt)
    deploy = to_deploy_form(model)
    shape = infer_input_shape(deploy, input_size)
    x = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(0))
    if real_inputs is not None:
        real_inputs = real_inputs.detach().float().cpu()
        if real_inputs.dim() != x.dim() or real_inputs.shape[1] != shape[0]:
            raise ValueError(f"real_inputs must have shape (N, {shape[0]}, ...), got {tuple(real_inputs.shape)}")
    opts = {"opset": opset or DEFAULT_OPSET, "dynamo": dynamo, "rtol": rtol, "atol": atol}
    all_dims = (0, *range(2, x.dim()))  # batch and spatial; the channel count is fixed by the weights
    levels = [all_dims, (0,), ()] if dynamic else [()]
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = workdir / path.name
    errors: list[str] = []
    try:
        for fallback in (False, True):
            candidate = deploy
            if fallback:
                from largekernel.nn.acceleration import to_torch_convs

                candidate = to_torch_convs(copy.deepcopy(deploy))
                logger.warning("retrying the %s export with PyTorch's own convolutions", fmt)
            for dims in levels:
                for leftover in workdir.iterdir():
                    leftover.unlink()
                try:
                    exported, checks = _attempt(candidate, deploy, fmt, x, target, dims, real_inputs, opts)
                except Exception as exc:  # exporters raise many types; try the next, simpler option
                    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    errors.append(f"dynamic dims {list(dims)}{' (fallback)' if fallback else ''}: {msg}")
                    logger.info("%s export with dynamic dims %s failed: %s", fmt, list(dims), msg)
                    continue
                files = _commit(workdir, path, fmt)
                result = ExportResult(path, files, fmt, tuple(x.shape), exported, fallback, checks)
                logger.info("exported %s (%s), dynamic dims %s, max |diff| %.3g", path, fmt, list(exported),
                            result.max_abs_diff)
                return result
        shown = errors if len(errors) <= 2 else [errors[0], errors[-1]]
        raise ExportError(f"could not export {type(model).__name__} to {fmt}: " + "; ".join(shown))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _commit(workdir: Path, path: Path, fmt: str) -> list[Path]:
    """Move the verified files into place (``os.replace``: atomic per file)."""
    names = [path.name] + ([path.with_suffix(".bin").name] if fmt == "openvino" else [])
    for name in names:
        with open(workdir / name, "rb") as f:
            os.fsync(f.fileno())
    # the .bin before the .xml: a reader that finds the new .xml also finds its weights
    for name in reversed(names):
        os.replace(workdir / name, path.parent / name)
    return [path.parent / n for n in names]
