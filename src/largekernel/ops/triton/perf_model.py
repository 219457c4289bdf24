"""Performance model of the Triton depthwise kernels: what a GPU run should be judged against.

Nothing in this module has been measured on a GPU (none was available while writing it). It
states, per kernel, the FLOPs performed and the bytes moved at each level of the memory
hierarchy, and turns them into a roofline time for an A100 and an H100, so that
``largekernel bench conv --device cuda`` results can be compared with the plan.

Model (stride 1, "same" padding, channel multiplier 1, NCHW input, float32 accumulation):

* **FLOPs**: ``2 * N * C * H * W * K^2`` for each of forward, grad_input and grad_weight
  (one FMA per tap per output; zero-padding taps are counted, as the kernels mask them).
* **DRAM bytes** (compulsory): forward reads ``x`` and writes ``y``; grad_input reads ``gy`` and
  writes ``gx``; grad_weight reads ``x`` and ``gy`` and writes a float32 partial ``C*K^2`` per
  split. Kernel re-reads are assumed to hit L2 (see below).
* **L2 -> SM bytes**: forward/grad_input read, per output tile of ``BLOCK_H x BLOCK_W``, the input
  tile plus its halo, ``(BLOCK_H+K-1) x (BLOCK_W+K-1)`` clipped to the map; grad_weight reads ``x``
  and ``gy`` once per tap group (``K * ceil(K / BLOCK_KW)`` groups). Tap groups of one chunk run
  next to each other in the grid, which is why their re-reads are expected to hit L2 rather than DRAM.
* **L1 bytes**: Triton exposes no register shifts, so every tap re-loads the input (forward),
  gradient (grad_input) or gathered input (grad_weight) element it multiplies: one element per
  FMA. With 128 B/clk/SM of L1 bandwidth this caps float32 kernels at about *half* the FP32 FMA
  peak on A100 and ~0.5x on H100 — the dominant bound for every large-kernel case below.
* **Time**: the roofline ``max(FLOPs / FP32 peak, DRAM / HBM, L2 / L2 bw, L1 / L1 bw)`` (products
  are FP32 FMAs whatever the storage dtype). Real kernels reach maybe 50-70 % of it.

Compiled resources (checked without a GPU by :mod:`largekernel.ops.triton.compile_report`, which
runs the ptxas shipped with Triton for sm_80 and sm_90; fp32, fp16 and bf16): every candidate tile
compiles, with 31-72 registers per thread for forward/grad_input and 40-128 for grad_weight, no local-memory spills, and
no shared memory beyond a 1 KB reduction scratch for grad_weight on sm_90 (Triton keeps these tiles
in registers and relies on L1 for the halo re-reads).
At <= 128 registers and 128-256 threads per program, occupancy is not the binding limit.

Tiles are the heuristic defaults of :mod:`largekernel.ops.triton.configs` for NCHW input
(forward/grad_input ``BLOCK_C x BLOCK_H x BLOCK_W``; grad_weight ``BLOCK_C x BLOCK_KW x BLOCK_W``);
on a GPU the autotuner may choose others. Device figures: A100-SXM4 (HBM 2.04 TB/s, FP32 19.5
TFLOP/s, 108 SMs at 1.41 GHz, L2 ~5 TB/s), H100-SXM5 (HBM 3.35 TB/s, FP32 67 TFLOP/s, 132 SMs at
1.98 GHz, L2 ~7 TB/s); L2 bandwidths are approximate figures from public microbenchmarks and the
least certain inputs. Regenerate the tables with :func:`markdown_table`.

float32 (4-byte storage):

| shape | K | kernel | tile | GFLOP | DRAM MB | L2 MB | L1 MB | A100 us (bound) | H100 us (bound) |
|---|---|---|---|---|---|---|---|---|---|
| 64x384x32^2 | 7 | forward | 1x8x32 | 2.47 | 201 | 277 | 4933 | 253 (L1) | 147 (L1) |
| 64x384x32^2 | 7 | grad_input | 1x8x32 | 2.47 | 201 | 277 | 4933 | 253 (L1) | 147 (L1) |
| 64x384x32^2 | 7 | grad_weight | 2x8x32, 1 splits | 2.47 | 201 | 1409 | 5549 | 285 (L1) | 201 (L2) |
| 64x384x32^2 | 13 | forward | 1x8x32 | 8.51 | 202 | 352 | 17012 | 873 (L1) | 509 (L1) |
| 64x384x32^2 | 13 | grad_input | 1x8x32 | 8.51 | 202 | 352 | 17012 | 873 (L1) | 509 (L1) |
| 64x384x32^2 | 13 | grad_weight | 2x16x32, 1 splits | 8.51 | 202 | 2618 | 18075 | 927 (L1) | 540 (L1) |
| 64x384x32^2 | 31 | forward | 1x8x32 | 48.37 | 203 | 503 | 96737 | 4963 (L1) | 2892 (L1) |
| 64x384x32^2 | 31 | grad_input | 1x8x32 | 48.37 | 203 | 503 | 96737 | 4963 (L1) | 2892 (L1) |
| 64x384x32^2 | 31 | grad_weight | 2x16x32, 1 splits | 48.37 | 204 | 12484 | 102784 | 5273 (L1) | 3072 (L1) |
| 8x64x56^2 | 7 | forward | 1x8x32 | 0.16 | 13 | 22 | 315 | 16 (L1) | 9 (L1) |
| 8x64x56^2 | 7 | grad_input | 1x8x32 | 0.16 | 13 | 22 | 315 | 16 (L1) | 9 (L1) |
| 8x64x56^2 | 7 | grad_weight | 2x8x32, 2 splits | 0.16 | 13 | 90 | 354 | 18 (L1) | 13 (L2) |
| 8x64x56^2 | 13 | forward | 1x8x32 | 0.54 | 13 | 32 | 1085 | 56 (L1) | 32 (L1) |
| 8x64x56^2 | 13 | grad_input | 1x8x32 | 0.54 | 13 | 32 | 1085 | 56 (L1) | 32 (L1) |
| 8x64x56^2 | 13 | grad_weight | 2x16x32, 2 splits | 0.54 | 13 | 167 | 1153 | 59 (L1) | 34 (L1) |
| 8x64x56^2 | 31 | forward | 1x8x32 | 3.09 | 13 | 67 | 6172 | 317 (L1) | 184 (L1) |
| 8x64x56^2 | 31 | grad_input | 1x8x32 | 3.09 | 13 | 67 | 6172 | 317 (L1) | 184 (L1) |
| 8x64x56^2 | 31 | grad_weight | 2x16x32, 1 splits | 3.09 | 13 | 797 | 6558 | 336 (L1) | 196 (L1) |

bfloat16 (2-byte storage, float32 accumulation):

| shape | K | kernel | tile | GFLOP | DRAM MB | L2 MB | L1 MB | A100 us (bound) | H100 us (bound) |
|---|---|---|---|---|---|---|---|---|---|
| 64x384x32^2 | 7 | forward | 1x8x32 | 2.47 | 101 | 138 | 2466 | 127 (L1) | 74 (L1) |
| 64x384x32^2 | 7 | grad_input | 1x8x32 | 2.47 | 101 | 138 | 2466 | 127 (L1) | 74 (L1) |
| 64x384x32^2 | 7 | grad_weight | 2x8x32, 1 splits | 2.47 | 101 | 705 | 2775 | 142 (L1) | 101 (L2) |
| 64x384x32^2 | 13 | forward | 1x8x32 | 8.51 | 101 | 176 | 8506 | 436 (L1) | 254 (L1) |
| 64x384x32^2 | 13 | grad_input | 1x8x32 | 8.51 | 101 | 176 | 8506 | 436 (L1) | 254 (L1) |
| 64x384x32^2 | 13 | grad_weight | 2x16x32, 1 splits | 8.51 | 101 | 1309 | 9038 | 464 (L1) | 270 (L1) |
| 64x384x32^2 | 31 | forward | 1x8x32 | 48.37 | 101 | 252 | 48369 | 2481 (L1) | 1446 (L1) |
| 64x384x32^2 | 31 | grad_input | 1x8x32 | 48.37 | 101 | 252 | 48369 | 2481 (L1) | 1446 (L1) |
| 64x384x32^2 | 31 | grad_weight | 2x16x32, 1 splits | 48.37 | 104 | 6243 | 51392 | 2637 (L1) | 1536 (L1) |
| 8x64x56^2 | 7 | forward | 1x8x32 | 0.16 | 6 | 11 | 157 | 8 (L1) | 5 (L1) |
| 8x64x56^2 | 7 | grad_input | 1x8x32 | 0.16 | 6 | 11 | 157 | 8 (L1) | 5 (L1) |
| 8x64x56^2 | 7 | grad_weight | 2x8x32, 2 splits | 0.16 | 6 | 45 | 177 | 9 (L1) | 6 (L2) |
| 8x64x56^2 | 13 | forward | 1x8x32 | 0.54 | 6 | 16 | 543 | 28 (L1) | 16 (L1) |
| 8x64x56^2 | 13 | grad_input | 1x8x32 | 0.54 | 6 | 16 | 543 | 28 (L1) | 16 (L1) |
| 8x64x56^2 | 13 | grad_weight | 2x16x32, 2 splits | 0.54 | 7 | 84 | 577 | 30 (L1) | 17 (L1) |
| 8x64x56^2 | 31 | forward | 1x8x32 | 3.09 | 7 | 34 | 3086 | 158 (L1) | 92 (L1) |
| 8x64x56^2 | 31 | grad_input | 1x8x32 | 3.09 | 7 | 34 | 3086 | 158 (L1) | 92 (L1) |
| 8x64x56^2 | 31 | grad_weight | 2x16x32, 1 splits | 3.09 | 7 | 398 | 3279 | 168 (L1) | 98 (L1) |

Reading the tables: every large-kernel case is L1-bound (Triton's re-load per tap), so the model
predicts about 50 % of FP32 peak at best. For comparison, published measurements put PyTorch's
cuDNN depthwise forward+backward at K=31 several times slower than dedicated kernels (iGEMM ~7x,
a hand-written CUDA kernel 14x at 64x384x32^2); those are the ratios ``bench conv --device cuda``
should test. If a GPU run is far below these times, first suspects: register spills of the
grad_weight ``[BLOCK_C, BLOCK_KW, BLOCK_W]`` product (lower ``BLOCK_KW``), uncoalesced loads for
the layout (the autotuner's ``cl``/``sp`` tile families), and too few programs at batch 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from largekernel.ops.triton import configs as cfgs

__all__ = ["Device", "DEVICES", "SHAPES", "KERNELS", "KernelCost", "costs", "markdown_table"]


@dataclass(frozen=True)
class Device:
    """Peak figures of one GPU (bytes/s and FLOP/s)."""

    name: str
    hbm: float
    l2: float
    l1: float
    fp32: float
    sms: int


def _l1(sms: int, ghz: float) -> float:
    return sms * 128 * ghz * 1e9  # 128 bytes per clock per SM


DEVICES = (
    Device("A100", 2.039e12, 5.0e12, _l1(108, 1.41), 19.5e12, 108),
    Device("H100", 3.35e12, 7.0e12, _l1(132, 1.98), 66.9e12, 132),
)
#: the issue's shapes (N, C, H, W)
SHAPES = ((64, 384, 32, 32), (8, 64, 56, 56))
KERNELS = (7, 13, 31)


@dataclass(frozen=True)
class KernelCost:
    """FLOPs and bytes of one kernel launch, and the tile it was modelled with."""

    kernel: str
    flops: float
    dram: float
    l2: float
    l1: float
    tile: str

    def time(self, dev: Device) -> tuple[float, str]:
        """Roofline time in seconds and the binding resource."""
        parts = {
            "FMA": self.flops / dev.fp32,
            "DRAM": self.dram / dev.hbm,
            "L2": self.l2 / dev.l2,
            "L1": self.l1 / dev.l1,
        }
        bound = max(parts, key=parts.get)
        return parts[bound], bound


def _halo_l2(n: int, c: int, h: int, w: int, k: int, bc: int, bh: int, bw: int, b: int) -> float:
    tiles = n * math.ceil(c / bc) * math.ceil(h / bh) * math.ceil(w / bw)
    return float(b * tiles * bc * min(bh + k - 1, h) * min(bw + k - 1, w))


def costs(shape: tuple[int, int, int, int], k: int, elem_bytes: int, sms: int = 108) -> list[KernelCost]:
    """Modelled cost of forward, grad_input and grad_weight for a ``k x k`` depthwise conv on ``shape``.

    Example:
        >>> [c.kernel for c in costs((8, 64, 56, 56), 7, 4)]
        ['forward', 'grad_input', 'grad_weight']
    """
    n, c, h, w = shape
    b = elem_bytes
    numel = n * c * h * w
    flops = 2.0 * numel * k * k
    fmas = flops / 2
    out: list[KernelCost] = []
    fc = cfgs.candidates("sp", False, c, h, w)[0]
    tile = f"{fc.block_c}x{fc.block_h}x{fc.block_w}"
    halo = _halo_l2(n, c, h, w, k, fc.block_c, fc.block_h, fc.block_w, b)
    for name in ("forward", "grad_input"):
        out.append(KernelCost(name, flops, 2.0 * b * numel + b * c * k * k, halo + b * numel, b * fmas, tile))
    gc = cfgs.grad_weight_candidates("sp", c, k, w)[0]
    groups = k * math.ceil(k / gc.block_kw)
    chunks = n * h * math.ceil(w / gc.block_w)
    programs = groups * math.ceil(c / gc.block_c)
    splits = max(1, min(chunks, math.ceil(4 * sms / programs)))
    workspace = 4.0 * splits * c * k * k
    l1 = b * fmas + b * fmas / gc.block_kw
    out.append(
        KernelCost(
            "grad_weight", flops, 2.0 * b * numel + 2 * workspace, groups * 2.0 * b * numel + workspace, l1,
            f"{gc.block_c}x{gc.block_kw}x{gc.block_w}, {splits} splits",
        )
    )
    return out


def markdown_table(elem_bytes: int) -> str:
    """The model for :data:`SHAPES` x :data:`KERNELS` as a Markdown table (times in microseconds)."""
    head = ["shape", "K", "kernel", "tile", "GFLOP", "DRAM MB", "L2 MB", "L1 MB"]
    head += [f"{d.name} us (bound)" for d in DEVICES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape in SHAPES:
        for k in KERNELS:
            for cost in costs(shape, k, elem_bytes, DEVICES[0].sms):
                row = [
                    "x".join(map(str, shape[:2])) + f"x{shape[2]}^2", str(k), cost.kernel, cost.tile,
                    f"{cost.flops / 1e9:.2f}", f"{cost.dram / 1e6:.0f}", f"{cost.l2 / 1e6:.0f}", f"{cost.l1 / 1e6:.0f}",
                ]
                for dev in DEVICES:
                    t, bound = cost.time(dev)
                    row.append(f"{t * 1e6:.0f} ({bound})")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
