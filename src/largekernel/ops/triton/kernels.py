"""The Triton kernels (imported only when the Triton path is used).

All three kernels see every tensor as 5-D ``(N, C, D, H, W)`` through its strides (1-D and 2-D
problems have unit D/H extents), so NCHW, channels-last and non-contiguous inputs need no copy,
and one design serves 1-D, 2-D and 3-D. Indices are int32 (checked by
:mod:`largekernel.ops.triton.checks`); products are accumulated in float32 whatever the storage
dtype. Kernel taps, strides, paddings and dilations are runtime values, so one compiled binary
serves every kernel size (a constexpr 63x63 loop would unroll 3969 bodies).

* ``dw_forward_kernel``: one program = ``BLOCK_C`` output channels x a ``BLOCK_H x BLOCK_W`` output
  tile at one output depth. Taps are looped over in registers (``acc += x_tile * w[c]``); the input
  tile plus its halo is re-read from L1/shared memory for each tap (Triton does not expose
  register shifts), so DRAM sees the input tile ~once.
* ``dw_grad_input_kernel``: the transposed convolution, gathered (no atomics): one program = an
  input tile of one *stride phase* (input positions congruent mod the stride), so for each tap
  either every position of the tile receives a contribution or none does and the tap is skipped
  with a scalar branch; sums over the channel multiplier inside the program.
* ``dw_grad_weight_kernel``: one program = ``BLOCK_C`` channels x ``BLOCK_KW`` taps of one kernel
  row, reducing over a contiguous range of chunks (batch, output depth, ``BLOCK_H x BLOCK_W``
  output tile). Each
  grad_output tile is loaded once and reused for ``BLOCK_KW`` taps. Partial sums go either to a
  per-split workspace (summed afterwards in a fixed order: deterministic) or through float32
  atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["dw_forward_kernel", "dw_grad_input_kernel", "dw_grad_weight_kernel"]


@triton.jit
def dw_forward_kernel(
    x_ptr, w_ptr, y_ptr,
    C_OUT, MULT, D, H, W, OD, OH, OW,
    sxn, sxc, sxd, sxh, sxw,
    syn, syc, syd, syh, syw,
    KD, KH, KW,
    STD, STH, STW, PD, PH, PW, DLD, DLH, DLW,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    tiles_w = tl.cdiv(OW, BLOCK_W)
    tiles_h = tl.cdiv(OH, BLOCK_H)
    tw = pid_s % tiles_w
    rest = pid_s // tiles_w
    th = rest % tiles_h
    rest = rest // tiles_h
    od = rest % OD
    n = rest // OD

    co = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = co < C_OUT
    ci = co // MULT
    sp = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = th * BLOCK_H + sp // BLOCK_W
    ow = tw * BLOCK_W + sp % BLOCK_W
    out_ok = (oh < OH) & (ow < OW)

    x_chan = x_ptr + n * sxn + ci * sxc
    iw0 = ow * STW - PW  # input column of tap 0 (hoisted: the tap loop adds kw * DLW)
    kk = KD * KH * KW
    acc = tl.zeros([BLOCK_C, BLOCK_H * BLOCK_W], dtype=tl.float32)
    for kd in range(0, KD):
        idp = od * STD - PD + kd * DLD
        if (idp >= 0) & (idp < D):
            for kh in range(0, KH):
                ih = oh * STH - PH + kh * DLH
                row_mask = c_ok[:, None] & (out_ok & (ih >= 0) & (ih < H))[None, :]
                row_ptr = x_chan[:, None] + (idp * sxd + ih * sxh + iw0 * sxw)[None, :]
                w_row = w_ptr + co * kk + (kd * KH + kh) * KW
                for kw in range(0, KW):
                    iw = iw0 + kw * DLW
                    ok = row_mask & ((iw >= 0) & (iw < W))[None, :]
                    xv = tl.load(row_ptr + kw * DLW * sxw, mask=ok, other=0.0)
                    wv = tl.load(w_row + kw, mask=c_ok, other=0.0)
                    acc += xv.to(tl.float32) * wv.to(tl.float32)[:, None]
    y_off = n * syn + co[:, None] * syc + od * syd + (oh * syh + ow * syw)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & out_ok[None, :])


@triton.jit
def dw_grad_input_kernel(
    gy_ptr, w_ptr, gx_ptr,
    C_IN, MULT, D, H, W, OD, OH, OW,
    sgn, sgc, sgd, sgh, sgw,
    sxn, sxc, sxd, sxh, sxw,
    KD, KH, KW,
    STD, STH, STW, PD, PH, PW, DLD, DLH, DLW,
    QH, QW,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # grid axis 0: (n, input depth, phase_h, phase_w, tile_h, tile_w); QH/QW = positions per phase
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    tiles_w = tl.cdiv(QW, BLOCK_W)
    tiles_h = tl.cdiv(QH, BLOCK_H)
    tw = pid_s % tiles_w
    rest = pid_s // tiles_w
    th = rest % tiles_h
    rest = rest // tiles_h
    rw = rest % STW
    rest = rest // STW
    rh = rest % STH
    rest = rest // STH
    idp = rest % D
    n = rest // D

    ci = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = ci < C_IN
    sp = tl.arange(0, BLOCK_H * BLOCK_W)
    qh = th * BLOCK_H + sp // BLOCK_W
    qw = tw * BLOCK_W + sp % BLOCK_W
    ih = rh + qh * STH
    iw = rw + qw * STW
    in_ok = (ih < H) & (iw < W)

    kk = KD * KH * KW
    acc = tl.zeros([BLOCK_C, BLOCK_H * BLOCK_W], dtype=tl.float32)
    for j in range(0, MULT):
        co = ci * MULT + j
        g_chan = gy_ptr + n * sgn + co * sgc
        for kd in range(0, KD):
            num_d = idp + PD - kd * DLD
            # exact multiples only, so C-style and floor division/remainder agree
            if num_d % STD == 0:
                odp = num_d // STD
                if (odp >= 0) & (odp < OD):
                    for kh in range(0, KH):
                        num_h = rh + PH - kh * DLH
                        if num_h % STH == 0:
                            oh = qh + num_h // STH
                            row_mask = c_ok[:, None] & (in_ok & (oh >= 0) & (oh < OH))[None, :]
                            row_ptr = g_chan[:, None] + (odp * sgd + oh * sgh)[None, :]
                            w_row = w_ptr + co * kk + (kd * KH + kh) * KW
                            for kw in range(0, KW):
                                num_w = rw + PW - kw * DLW
                                if num_w % STW == 0:
                                    ow = qw + num_w // STW
                                    ok = row_mask & ((ow >= 0) & (ow < OW))[None, :]
                                    gv = tl.load(row_ptr + (ow * sgw)[None, :], mask=ok, other=0.0)
                                    wv = tl.load(w_row + kw, mask=c_ok, other=0.0)
                                    acc += gv.to(tl.float32) * wv.to(tl.float32)[:, None]
    x_off = n * sxn + ci[:, None] * sxc + idp * sxd + (ih * sxh + iw * sxw)[None, :]
    tl.store(gx_ptr + x_off, acc.to(gx_ptr.dtype.element_ty), mask=c_ok[:, None] & in_ok[None, :])


@triton.jit
def dw_grad_weight_kernel(
    x_ptr, gy_ptr, out_ptr,
    C_OUT, MULT, D, H, W, OD, OH, OW,
    sxn, sxc, sxd, sxh, sxw,
    sgn, sgc, sgd, sgh, sgw,
    KD, KH, KW,
    STD, STH, STW, PD, PH, PW, DLD, DLH, DLW,
    TOTAL_CHUNKS, CHUNKS_PER_SPLIT,
    ATOMIC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_KW: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_t = tl.program_id(0)  # (kd, kh, block of kw)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)  # split of the batch/space reduction
    tiles_kw = tl.cdiv(KW, BLOCK_KW)
    kwb = pid_t % tiles_kw
    rest = pid_t // tiles_kw
    kh = rest % KH
    kd = rest // KH

    co = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = co < C_OUT
    ci = co // MULT
    kw = kwb * BLOCK_KW + tl.arange(0, BLOCK_KW)
    kw_ok = kw < KW
    sp = tl.arange(0, BLOCK_H * BLOCK_W)
    tiles_ow = tl.cdiv(OW, BLOCK_W)
    tiles_oh = tl.cdiv(OH, BLOCK_H)
    g_chan = gy_ptr + co * sgc
    x_chan = x_ptr + ci * sxc

    acc = tl.zeros([BLOCK_C, BLOCK_KW], dtype=tl.float32)
    start = pid_s * CHUNKS_PER_SPLIT
    stop = tl.minimum(start + CHUNKS_PER_SPLIT, TOTAL_CHUNKS)
    for q in range(start, stop):  # chunk = (n, output depth, tile of BLOCK_H x BLOCK_W outputs)
        tw = q % tiles_ow
        rest = q // tiles_ow
        th = rest % tiles_oh
        rest = rest // tiles_oh
        odp = rest % OD
        n = rest // OD
        idp = odp * STD - PD + kd * DLD
        ih_first = th * BLOCK_H * STH - PH + kh * DLH
        ih_last = ih_first + (BLOCK_H - 1) * STH
        # tiles whose rows all fall in the padding contribute nothing: skip them without loads
        if (idp >= 0) & (idp < D) & (ih_last >= 0) & (ih_first < H):
            oh = th * BLOCK_H + sp // BLOCK_W
            ow = tw * BLOCK_W + sp % BLOCK_W
            ih = oh * STH - PH + kh * DLH
            out_ok = (oh < OH) & (ow < OW)
            gv = tl.load(
                g_chan[:, None] + (n * sgn + odp * sgd + oh * sgh + ow * sgw)[None, :],
                mask=c_ok[:, None] & out_ok[None, :],
                other=0.0,
            )
            iw = ow[None, :] * STW - PW + kw[:, None] * DLW  # [BLOCK_KW, S]
            x_ok = (iw >= 0) & (iw < W) & (out_ok & (ih >= 0) & (ih < H))[None, :] & kw_ok[:, None]
            x_off = n * sxn + idp * sxd + ih[None, :] * sxh + iw * sxw
            xv = tl.load(
                x_chan[:, None, None] + x_off[None, :, :],
                mask=c_ok[:, None, None] & x_ok[None, :, :],
                other=0.0,
            )
            acc += tl.sum(xv.to(tl.float32) * gv.to(tl.float32)[:, None, :], axis=2)
    kk = KD * KH * KW
    tap = (kd * KH + kh) * KW + kw
    off = co[:, None] * kk + tap[None, :]
    mask = c_ok[:, None] & kw_ok[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptr + off, acc, mask=mask)
    else:
        tl.store(out_ptr + pid_s * (C_OUT * kk) + off, acc, mask=mask)
