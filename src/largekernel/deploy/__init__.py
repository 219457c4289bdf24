"""Deployment: export to ONNX / OpenVINO / TorchScript / ExportedProgram, verified in real runtimes.

* :func:`export` -- reparameterise a model, export it in one of :data:`FORMATS`, run the result in
  its runtime (onnxruntime, OpenVINO, ``torch.jit``, ``torch.export``) on random and real inputs
  and compare against PyTorch; the file appears only if everything passed (atomic write).
* :func:`quantize_onnx` -- ONNX Runtime static int8 quantisation (per-channel weights);
  :func:`evaluate_int8` -- the fp32 export and its int8 model evaluated on the same images.
* :func:`save_local_dir` / :func:`load_local_dir` -- the hub-style ``config.json`` +
  ``model.safetensors`` directory, offline (also ``create_model("local-dir:PATH")``).
* :mod:`largekernel.deploy.bench` -- the inference runtimes timed by ``largekernel bench deploy``.
"""

from __future__ import annotations

# Eager imports: the submodules import onnx / onnxruntime / OpenVINO only inside functions. The
# function ``export`` is bound after its module, so ``largekernel.deploy.export`` is the function.
from largekernel.deploy.export import FORMATS, ExportError, ExportResult, export, infer_input_shape, to_deploy_form
from largekernel.deploy.local_dir import load_local_dir, save_local_dir
from largekernel.deploy.quantize import Int8Evaluation, evaluate_int8, onnx_accuracy, quantize_onnx
from largekernel.deploy.verify import VerificationError, load_runtime, onnx_op_types

__all__ = [
    "FORMATS", "ExportError", "ExportResult", "export", "infer_input_shape", "to_deploy_form",
    "load_local_dir", "save_local_dir", "onnx_accuracy", "quantize_onnx", "Int8Evaluation", "evaluate_int8",
    "VerificationError", "load_runtime", "onnx_op_types",
]
