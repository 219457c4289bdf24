"""Tile configurations for the Triton depthwise kernels, keyed on the problem's shape and layout.

Every kernel sees its tensors through their strides, so one kernel serves NCHW, channels-last and
non-contiguous inputs; what changes with the layout is which tile shape gives coalesced loads:

* ``"cl"`` (channel stride 1, e.g. channels-last): wide channel tiles (``BLOCK_C`` 16-128), few
  spatial positions per program;
* ``"sp"`` (spatial stride 1, e.g. NCHW/NCL): a few channels, wide rows (``BLOCK_W`` 16-256).

:func:`candidates` lists the configurations the CUDA autotuner times on the first call per key
(see :func:`largekernel.ops.triton.launch.tune`); the first one is the heuristic default used under
the interpreter and when ``LARGEKERNEL_TRITON_AUTOTUNE=0``. All block sizes are powers of two (a
Triton requirement) and are shrunk to the problem (a 5-channel input never gets a 64-channel tile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TileConfig",
    "GradWeightConfig",
    "layout_class",
    "candidates",
    "grad_weight_candidates",
    "interpreter_config",
    "interpreter_grad_weight_config",
    "next_pow2",
]


@dataclass(frozen=True)
class TileConfig:
    """Output tile of the forward / grad_input kernels: ``BLOCK_C`` channels x ``BLOCK_H`` x ``BLOCK_W``."""

    block_c: int
    block_h: int
    block_w: int
    num_warps: int = 4


@dataclass(frozen=True)
class GradWeightConfig:
    """grad_weight tile: ``BLOCK_C`` channels x ``BLOCK_KW`` taps of one kernel row, reduced over
    ``BLOCK_H x BLOCK_W`` output positions at a time; ``splits`` programs share the batch/space
    reduction (0 = chosen from the device size)."""

    block_c: int
    block_kw: int
    block_w: int
    num_warps: int = 4
    splits: int = 0
    block_h: int = 1


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def layout_class(strides: Sequence[int], channels: int) -> str:
    """``"cl"`` when channels are the unit-stride axis of a multi-channel input, else ``"sp"``."""
    return "cl" if channels > 1 and strides[1] == 1 else "sp"


_FWD = {
    ("cl", False): [(32, 2, 8, 4), (64, 1, 8, 4), (16, 4, 8, 4), (32, 4, 4, 4), (128, 1, 4, 4)],
    ("sp", False): [(1, 8, 32, 4), (2, 4, 32, 4), (4, 4, 16, 4), (1, 16, 16, 4), (8, 2, 16, 4)],
    ("cl", True): [(32, 1, 16, 4), (64, 1, 8, 4), (16, 1, 32, 4), (128, 1, 4, 4)],
    ("sp", True): [(1, 1, 256, 4), (4, 1, 128, 4), (8, 1, 64, 4), (2, 1, 512, 8)],
}
_GW = {
    "cl": [(32, 8, 8, 4), (16, 16, 8, 4), (64, 4, 8, 4), (32, 16, 4, 4)],
    "sp": [(2, 16, 32, 4), (4, 8, 32, 4), (1, 32, 64, 4), (8, 16, 16, 4)],
}


def candidates(layout: str, one_d: bool, channels: int, out_h: int, out_w: int) -> list[TileConfig]:
    """Forward/grad_input tile candidates, best guess first, shrunk to the problem and de-duplicated."""
    out: list[TileConfig] = []
    for bc, bh, bw, nw in _FWD[(layout, one_d)]:
        cfg = TileConfig(
            min(bc, next_pow2(channels)), min(bh, next_pow2(out_h)), min(bw, next_pow2(out_w)), nw
        )
        if cfg not in out:
            out.append(cfg)
    return out


def grad_weight_candidates(layout: str, channels: int, kernel_w: int, out_w: int) -> list[GradWeightConfig]:
    """grad_weight tile candidates, best guess first, shrunk to the problem and de-duplicated."""
    out: list[GradWeightConfig] = []
    for bc, bkw, bw, nw in _GW[layout]:
        cfg = GradWeightConfig(
            min(bc, next_pow2(channels)), min(bkw, next_pow2(kernel_w)), min(bw, next_pow2(out_w)), nw
        )
        if cfg not in out:
            out.append(cfg)
    return out


def interpreter_config(channels: int, out_h: int, out_w: int) -> TileConfig:
    """Forward/grad_input tile for Triton's CPU interpreter: as few programs as possible.

    The interpreter's cost is per *operation* (Python overhead), nearly independent of the tile
    size, so one large tile beats the GPU-shaped ones by the number of programs saved.
    """
    bw = min(next_pow2(out_w), 64)
    return TileConfig(min(next_pow2(channels), 16), min(next_pow2(out_h), max(1, 256 // bw)), bw)


def interpreter_grad_weight_config(channels: int, kernel_w: int, out_h: int, out_w: int) -> GradWeightConfig:
    """grad_weight tile for the interpreter (few programs, whole rows per chunk; see above)."""
    bw = min(next_pow2(out_w), 64)
    return GradWeightConfig(
        min(next_pow2(channels), 16), min(next_pow2(kernel_w), 32), bw, block_h=min(next_pow2(out_h), max(1, 64 // bw))
    )
