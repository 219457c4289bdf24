"""Compile the Triton kernels for a GPU architecture without a GPU, and report their resources.

Triton's interpreter checks what the kernels compute, not whether Triton can compile them; this
module closes that gap on machines without a GPU. ``triton.compile`` lowers a kernel to PTX and
runs the ``ptxas`` shipped in the Triton wheel for a target such as ``sm_80`` (A100) or ``sm_90``
(H100) — no driver needed — and ``cuobjdump`` (also in the wheel) reports registers per thread,
shared memory and local-memory spills of the resulting cubin. Register counts feed the occupancy
assumptions of :mod:`largekernel.ops.triton.perf_model`; any spill is a performance bug.

All integer arguments are compiled as generic ``i32`` (a real launch additionally specialises
arguments equal to 1 or divisible by 16, which only removes instructions). Run it in a process
where Triton was imported *without* ``TRITON_INTERPRET=1`` (Triton's own helpers such as
``tl.cdiv`` are then interpreted-only), e.g. from the command line::

    python -m largekernel.ops.triton.compile_report --arch 90 --dtype bf16

Example:
    >>> rows = compile_kernels(80, "fp32", kinds=("forward",))  # doctest: +SKIP
    >>> rows[0]["registers"], rows[0]["spill_bytes"]  # doctest: +SKIP
    (40, 0)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from largekernel.ops.triton import configs as cfgs
from largekernel.ops.triton import kernels

__all__ = ["compile_kernel", "compile_kernels", "resource_usage", "default_configs"]

_PTR_ARGS = 3  # every kernel takes (input, weight-or-grad, output) pointers first


def _jit(fn) -> JITFunction:
    """The compilable form of a kernel, even when it was defined under ``TRITON_INTERPRET=1``."""
    return fn if isinstance(fn, JITFunction) else JITFunction(fn.fn)


def _signature(fn, ptr_types: tuple[str, str, str], constexprs: dict) -> dict[str, str]:
    sig = {}
    for i, name in enumerate(fn.arg_names):
        sig[name] = "constexpr" if name in constexprs else (ptr_types[i] if i < _PTR_ARGS else "i32")
    return sig


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, shared memory, stack and local (spill) bytes of a cubin, via the wheel's cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as fh:
            fh.write(cubin)
        out = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    if "REG" not in fields:
        raise RuntimeError(f"could not read resource usage from cuobjdump output: {out!r}")
    return {
        "registers": int(fields["REG"]),
        "shared_bytes": int(fields.get("SHARED", 0)),
        "stack_bytes": int(fields.get("STACK", 0)),
        "spill_bytes": int(fields.get("LOCAL", 0)),
    }


def compile_kernel(kind: str, arch: int, dtype: str, config) -> dict:
    """Compile one kernel (``"forward"``, ``"grad_input"`` or ``"grad_weight"``) for ``sm_<arch>``.

    Args:
        kind: which kernel.
        arch: CUDA compute capability as an int (80 = A100, 90 = H100).
        dtype: storage dtype of the tensors, ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        config: a :class:`~largekernel.ops.triton.configs.TileConfig` (forward/grad_input) or
            :class:`~largekernel.ops.triton.configs.GradWeightConfig` (grad_weight).

    Returns:
        The config, target and :func:`resource_usage` of the compiled cubin.
    """
    ptr = "*" + dtype
    if kind in ("forward", "grad_input"):
        fn = kernels.dw_forward_kernel if kind == "forward" else kernels.dw_grad_input_kernel
        consts = {"BLOCK_C": config.block_c, "BLOCK_H": config.block_h, "BLOCK_W": config.block_w}
        ptrs = (ptr, ptr, ptr)
    elif kind == "grad_weight":
        fn = kernels.dw_grad_weight_kernel
        consts = {"ATOMIC": True, "BLOCK_C": config.block_c, "BLOCK_KW": config.block_kw,
                  "BLOCK_H": config.block_h, "BLOCK_W": config.block_w}
        ptrs = (ptr, ptr, "*fp32")
    else:
        raise ValueError(f"kind must be 'forward', 'grad_input' or 'grad_weight', got {kind!r}")
    fn = _jit(fn)
    src = ASTSource(fn=fn, signature=_signature(fn, ptrs, consts), constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": config.num_warps})
    usage = resource_usage(compiled.asm["cubin"])
    return {"kernel": kind, "arch": f"sm_{arch}", "dtype": dtype, **asdict(config), **usage}


def default_configs() -> list[tuple[str, object]]:
    """Every GPU candidate tile (all layout classes, 1-D and 2-D), unshrunk, per kernel kind."""
    out: list[tuple[str, object]] = []
    for layout in ("sp", "cl"):
        for one_d in (False, True):
            for cfg in cfgs.candidates(layout, one_d, 1 << 20, 1 << 20, 1 << 20):
                out += [("forward", cfg), ("grad_input", cfg)]
        out += [("grad_weight", cfg) for cfg in cfgs.grad_weight_candidates(layout, 1 << 20, 1 << 20, 1 << 20)]
    return list(dict.fromkeys(out))


def compile_kernels(
    arch: int = 80,
    dtype: str = "fp32",
    kinds: Iterable[str] = ("forward", "grad_input", "grad_weight"),
    configs: list[tuple[str, object]] | None = None,
) -> list[dict]:
    """Compile the given (kind, config) pairs (default: every candidate) and report resources."""
    kinds = tuple(kinds)
    pairs = [(k, c) for k, c in (configs if configs is not None else default_configs()) if k in kinds]
    return [compile_kernel(kind, arch, dtype, cfg) for kind, cfg in pairs]


def main(argv: list[str] | None = None) -> int:
    """Command line: compile the given (or every candidate) tiles and print one JSON row per kernel."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=80, help="compute capability, e.g. 80 (A100) or 90 (H100)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--defaults-only", action="store_true", help="only the first (heuristic) tile per kernel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "").strip() not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the compiler cannot run in an interpreter-mode process")
    configs = None
    if args.defaults_only:
        configs = [
            ("forward", cfgs.candidates("sp", False, 1 << 20, 1 << 20, 1 << 20)[0]),
            ("grad_input", cfgs.candidates("cl", False, 1 << 20, 1 << 20, 1 << 20)[0]),
            ("grad_weight", cfgs.grad_weight_candidates("sp", 1 << 20, 31, 1 << 20)[0]),
        ]
    for row in compile_kernels(args.arch, args.dtype, configs=configs):
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
