/*
 * Depthwise convolution kernels on a channel-blocked layout, one element type per inclusion.
 *
 * Included by dwconv.c with T (scalar type), VT (a 64-byte GCC vector of T) and NAME(x)
 * (symbol suffixing) defined. Every tensor handled here is "channel blocked": the channel axis
 * is split into CB blocks of VL = 64 / sizeof(T) lanes and the lane index is the innermost
 * (fastest) axis, e.g. x is (N, CB, D, H, W, VL). One vector therefore holds VL channels of
 * one spatial position, and a depthwise convolution is plain vector FMAs with no shuffles.
 * 1-D and 2-D problems are expressed as 3-D ones with leading singleton spatial axes.
 *
 * (A .c file rather than a header so that the package's "*.c" data glob ships it.)
 */
#ifndef NAME
#error "dwconv_impl.c is a template included by dwconv.c; do not compile it on its own"
#endif

#define VL ((idx)(64 / sizeof(T)))

/* unaligned vector load/store (compiles to vmovups; the buffers are 64-byte aligned anyway) */
static inline VT NAME(ld)(const T *p) {
    VT v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void NAME(st)(T *p, VT v) { memcpy(p, &v, sizeof v); }

/* In-register transpose of a VL x VL tile: on entry r[i] holds row i (VL elements), on exit
 * r[j] holds column j. log2(VL) butterfly stages of two-input shuffles: at stage h, rows i and
 * i + h swap the elements whose column index has bit h set in row i / clear in row i + h.
 * GCC's __builtin_shuffle only; other compilers keep the element-wise packing loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define LK_HAVE_TRANSPOSE 1
static inline __attribute__((always_inline)) void NAME(transpose_tile)(VT *r) {
    typedef __typeof__((VT){0} < (VT){0}) IT; /* the integer vector with VT's lane count */
#pragma GCC unroll 8
    for (int h = (int)(VL / 2); h >= 1; h /= 2) {
        IT lo, hi;
#pragma GCC unroll 16
        for (int j = 0; j < (int)VL; j++) {
            lo[j] = (j & h) ? (int)VL + j - h : j;
            hi[j] = (j & h) ? (int)VL + j : j + h;
        }
#pragma GCC unroll 16
        for (int i = 0; i < (int)VL; i++) {
            if (i & h) continue;
            VT a = r[i], b = r[i + h];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i + h] = __builtin_shuffle(a, b, hi);
        }
    }
}
#endif

/* ------------------------------------------------------------------------------------------
 * Packing: arbitrary strided (N, C, D, H, W) -> blocked, zero padded (N, CB, Dn, Hn, Wn, VL).
 * Destination position (dn, hn, wn) reads source (dn - pd, hn - ph, wn - pw); positions
 * outside the source and lanes past C are written as zeros, so the destination needs no
 * prior initialisation. Rows (n, cb, dn, hn) in [r0, r1) are produced (parallel chunks).
 * p = {N, C, D, H, W, sN, sC, sD, sH, sW, CB, Dn, Hn, Wn, pd, ph, pw}
 * ---------------------------------------------------------------------------------------- */
void NAME(pack)(const T *src, T *dst, const idx *p, idx r0, idx r1) {
    const idx C = p[1], D = p[2], H = p[3], W = p[4];
    const idx sN = p[5], sC = p[6], sD = p[7], sH = p[8], sW = p[9];
    const idx CB = p[10], Dn = p[11], Hn = p[12], Wn = p[13];
    const idx pd = p[14], ph = p[15], pw = p[16];
    /* valid destination column range: 0 <= wn - pw < W */
    idx w_lo = pw < 0 ? 0 : pw;
    idx w_hi = pw + W < Wn ? pw + W : Wn;
    for (idx r = r0; r < r1; r++) {
        idx hn = r % Hn, t = r / Hn;
        idx dn = t % Dn;
        t /= Dn;
        idx cb = t % CB, n = t / CB;
        T *out = dst + r * Wn * VL;
        idx d = dn - pd, h = hn - ph;
        idx c0 = cb * VL, nv = C - c0 < VL ? C - c0 : VL;
        if (d < 0 || d >= D || h < 0 || h >= H || w_hi <= w_lo) {
            memset(out, 0, (size_t)(Wn * VL) * sizeof(T));
            continue;
        }
        if (w_lo > 0) memset(out, 0, (size_t)(w_lo * VL) * sizeof(T));
        if (w_hi < Wn) memset(out + w_hi * VL, 0, (size_t)((Wn - w_hi) * VL) * sizeof(T));
        const T *base = src + n * sN + c0 * sC + d * sD + h * sH + (w_lo - pw) * sW;
        if (sC == 1 && nv == VL) {
            /* channels-last source: each position is one contiguous vector */
            for (idx w = w_lo; w < w_hi; w++) NAME(st)(out + w * VL, NAME(ld)(base + (w - w_lo) * sW));
        } else {
            if (nv < VL) {
                for (idx w = w_lo; w < w_hi; w++)
                    for (idx v = nv; v < VL; v++) out[w * VL + v] = 0;
            }
            idx done = 0;
#ifdef LK_HAVE_TRANSPOSE
            if (sW == 1 && nv == VL) {
                /* NCHW-like source: VL channel rows of VL columns each are one tile; transposed
                 * in registers they are VL destination vectors (one per column) */
                for (; done + VL <= w_hi - w_lo; done += VL) {
                    VT tile[VL];
                    for (idx v = 0; v < VL; v++) tile[v] = NAME(ld)(base + v * sC + done);
                    NAME(transpose_tile)(tile);
                    for (idx i = 0; i < VL; i++) NAME(st)(out + (w_lo + done + i) * VL, tile[i]);
                }
            }
#endif
            /* one source plane per lane: reads run along w (sequential for NCHW sources); the
             * row is done in column blocks so the interleaved destination block stays in L1 */
            for (idx wb = done; wb < w_hi - w_lo; wb += PACK_BLOCK) {
                idx we = w_hi - w_lo - wb < PACK_BLOCK ? w_hi - w_lo : wb + PACK_BLOCK;
                for (idx v = 0; v < nv; v++) {
                    const T *s = base + v * sC;
                    T *o = out + w_lo * VL + v;
                    for (idx w = wb; w < we; w++) o[w * VL] = s[w * sW];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Unpacking: blocked (N, CB, D, H, W, VL) -> arbitrary strided (N, C, D, H, W); the inverse of
 * pack without padding (lanes past C are dropped). Rows (n, cb, d, h) in [r0, r1).
 * p = {N, C, D, H, W, sN, sC, sD, sH, sW, CB} (strides of the destination, in elements)
 * ---------------------------------------------------------------------------------------- */
void NAME(unpack)(const T *src, T *dst, const idx *p, idx r0, idx r1) {
    const idx C = p[1], D = p[2], H = p[3], W = p[4];
    const idx sN = p[5], sC = p[6], sD = p[7], sH = p[8], sW = p[9];
    const idx CB = p[10];
    for (idx r = r0; r < r1; r++) {
        idx h = r % H, t = r / H;
        idx d = t % D;
        t /= D;
        idx cb = t % CB, n = t / CB;
        const T *in = src + r * W * VL;
        idx c0 = cb * VL, nv = C - c0 < VL ? C - c0 : VL;
        T *base = dst + n * sN + c0 * sC + d * sD + h * sH;
        if (sC == 1 && nv == VL) {
            for (idx w = 0; w < W; w++) NAME(st)(base + w * sW, NAME(ld)(in + w * VL));
            continue;
        }
        idx done = 0;
#ifdef LK_HAVE_TRANSPOSE
        if (sW == 1 && nv == VL) {
            /* NCHW-like destination: VL columns of VL lanes, transposed, are VL channel rows */
            for (; done + VL <= W; done += VL) {
                VT tile[VL];
                for (idx i = 0; i < VL; i++) tile[i] = NAME(ld)(in + (done + i) * VL);
                NAME(transpose_tile)(tile);
                for (idx v = 0; v < VL; v++) NAME(st)(base + v * sC + done, tile[v]);
            }
        }
#endif
        for (idx wb = done; wb < W; wb += PACK_BLOCK) {
            idx we = W - wb < PACK_BLOCK ? W : wb + PACK_BLOCK;
            for (idx v = 0; v < nv; v++) {
                T *o = base + v * sC;
                const T *s = in + v;
                for (idx w = wb; w < we; w++) o[w * sW] = s[w * VL];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * grad_weight, stride 1 along w: for JB consecutive taps,
 *   out[j] += sum_{o < nw} x[o + j] * g[o]          (vectors; j < JB)
 * where x[i] is at x + i * xs and g[o] at g + o * gs (xs = VL for a packed row, dw * VL for one
 * phase of a dilated row).
 * Register blocking: per step of WB outputs, WB gradient vectors and WB + JB - 1 input vectors
 * are loaded for WB * JB FMAs, and the JB accumulators stay in registers for the whole row.
 * JB is a compile-time constant at every call site (always_inline), so the arrays below become
 * registers after full unrolling.
 * ---------------------------------------------------------------------------------------- */
static inline __attribute__((always_inline)) void NAME(gw_tile)(T *out, const T *x, idx xs, const T *g, idx gs,
                                                                idx nw, const int JB) {
    VT acc[GW_JB_MAX];
#pragma GCC unroll 16
    for (int j = 0; j < JB; j++) acc[j] = (VT){0};
    idx o = 0;
    for (; o + GW_WB <= nw; o += GW_WB) {
        VT gv[GW_WB];
#pragma GCC unroll 16
        for (int i = 0; i < GW_WB; i++) gv[i] = NAME(ld)(g + (o + i) * gs);
#pragma GCC unroll 32
        for (int t = 0; t < GW_WB + JB - 1; t++) {
            VT xv = NAME(ld)(x + (o + t) * xs);
#pragma GCC unroll 16
            for (int i = 0; i < GW_WB; i++) {
                int j = t - i;
                if (j >= 0 && j < JB) acc[j] += xv * gv[i];
            }
        }
    }
    for (; o < nw; o++) {
        VT gv = NAME(ld)(g + o * gs);
#pragma GCC unroll 16
        for (int j = 0; j < JB; j++) acc[j] += NAME(ld)(x + (o + j) * xs) * gv;
    }
    /* per-row partial sums are added to memory: a two-level sum, more accurate in fp32 */
#pragma GCC unroll 16
    for (int j = 0; j < JB; j++) NAME(st)(out + j * VL, NAME(ld)(out + j * VL) + acc[j]);
}

/* taps [k0, k1) of one row: 8-tap tiles, then one tile of exactly the remaining width */
static inline __attribute__((always_inline)) void NAME(gw_row)(T *out, const T *x, idx xs, const T *g, idx gs, idx nw,
                                                               idx k0, idx k1) {
    idx j = k0;
    for (; j + 8 <= k1; j += 8) NAME(gw_tile)(out + j * VL, x + j * xs, xs, g, gs, nw, 8);
    T *o = out + j * VL;
    const T *xj = x + j * xs;
    switch (k1 - j) {
        case 7: NAME(gw_tile)(o, xj, xs, g, gs, nw, 7); break;
        case 6: NAME(gw_tile)(o, xj, xs, g, gs, nw, 6); break;
        case 5: NAME(gw_tile)(o, xj, xs, g, gs, nw, 5); break;
        case 4: NAME(gw_tile)(o, xj, xs, g, gs, nw, 4); break;
        case 3: NAME(gw_tile)(o, xj, xs, g, gs, nw, 3); break;
        case 2: NAME(gw_tile)(o, xj, xs, g, gs, nw, 2); break;
        case 1: NAME(gw_tile)(o, xj, xs, g, gs, nw, 1); break;
        default: break;
    }
}

/* grad_weight, any stride/dilation along w: out[j] += sum_o x[o*sw + j*dw] * g[o], j < nj */
static void NAME(gw_generic)(T *out, const T *x, const T *g, idx gs, idx nw, idx nj, idx sw, idx dw) {
    idx j0 = 0;
    for (; j0 + 8 <= nj; j0 += 8) {
        VT acc[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) acc[j] = (VT){0};
        const T *xj = x + j0 * dw * VL;
        for (idx o = 0; o < nw; o++) {
            VT gv = NAME(ld)(g + o * gs);
            const T *xo = xj + o * sw * VL;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) acc[j] += NAME(ld)(xo + j * dw * VL) * gv;
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) NAME(st)(out + (j0 + j) * VL, NAME(ld)(out + (j0 + j) * VL) + acc[j]);
    }
    for (; j0 < nj; j0++) {
        VT acc = (VT){0};
        const T *xj = x + j0 * dw * VL;
        for (idx o = 0; o < nw; o++) acc += NAME(ld)(xj + o * sw * VL) * NAME(ld)(g + o * gs);
        NAME(st)(out + j0 * VL, NAME(ld)(out + j0 * VL) + acc);
    }
}

/* ------------------------------------------------------------------------------------------
 * grad_weight tasks. xp: blocked padded input (N, CB, Dn, Hn, Wn, VL); gp: output gradient
 * (N, CB, Do, Ho, Wo, VL) with lanes contiguous and arbitrary strides G (elements) for the
 * other axes, so a channels-last gradient with C % VL == 0 is used without packing;
 * gw: blocked weight gradient (CB, KD, KH, KW, VL).
 * Task t = ((cb * KD + kd) * NHG + hg) * NG + grp owns kernel rows kh in [hg*HS, (hg+1)*HS) and
 * taps kw in [grp*GS, (grp+1)*GS) (clipped) of channel block cb, so tasks write disjoint outputs
 * (no reduction). Within a task, for each output row all its kernel rows are processed
 * back to back: the gradient row is reused from L1 and the input rows oh*sh + kh*dh slide,
 * so each task streams its input and gradient planes about once instead of once per kernel row.
 * q = {N, CB, Dn, Hn, Wn, Do, Ho, Wo, KD, KH, KW, sd, sh, sw, dd, dh, dw, NG, GS, NHG, HS,
 *      G_n, G_cb, G_d, G_h, G_w}
 * ---------------------------------------------------------------------------------------- */
void NAME(gw_tasks)(const T *xp, const T *gp, T *gw, const idx *q, idx t0, idx t1) {
    const idx N = q[0], CB = q[1], Dn = q[2], Hn = q[3], Wn = q[4];
    const idx Do = q[5], Ho = q[6], Wo = q[7], KD = q[8], KH = q[9], KW = q[10];
    const idx sd = q[11], sh = q[12], sw = q[13], dd = q[14], dh = q[15], dw = q[16];
    const idx NG = q[17], GS = q[18], NHG = q[19], HS = q[20];
    const idx gsn = q[21], gscb = q[22], gsd = q[23], gsh = q[24], gsw = q[25];
    for (idx t = t0; t < t1; t++) {
        idx grp = t % NG, r = t / NG;
        idx hg = r % NHG;
        r /= NHG;
        idx kd = r % KD, cb = r / KD;
        idx k0 = grp * GS, k1 = k0 + GS < KW ? k0 + GS : KW;
        idx h0 = hg * HS, h1 = h0 + HS < KH ? h0 + HS : KH;
        if (k0 >= k1 || h0 >= h1) continue;
        T *out_plane = gw + ((cb * KD + kd) * KH) * KW * VL;
        for (idx kh = h0; kh < h1; kh++) memset(out_plane + (kh * KW + k0) * VL, 0, (size_t)((k1 - k0) * VL) * sizeof(T));
        for (idx n = 0; n < N; n++) {
            for (idx od = 0; od < Do; od++) {
                idx id = od * sd + kd * dd;
                for (idx oh = 0; oh < Ho; oh++) {
                    const T *grow = gp + n * gsn + cb * gscb + od * gsd + oh * gsh;
                    for (idx kh = h0; kh < h1; kh++) {
                        idx ih = oh * sh + kh * dh;
                        const T *xrow = xp + (((n * CB + cb) * Dn + id) * Hn + ih) * Wn * VL;
                        T *out = out_plane + kh * KW * VL;
                        /* chunks of the row keep the gradient slice in L1 while the taps sweep it */
                        for (idx c0 = 0; c0 < Wo; c0 += GW_CHUNK) {
                            idx nw = Wo - c0 < GW_CHUNK ? Wo - c0 : GW_CHUNK;
                            const T *g = grow + c0 * gsw;
                            if (sw == 1 && dw == 1) {
                                /* x is packed, so its stride is the compile-time VL */
                                NAME(gw_row)(out, xrow + c0 * VL, VL, g, gsw, nw, k0, k1);
                            } else if (sw == 1) {
                                /* dilation dw: outputs o = r (mod dw) only meet inputs r (mod dw),
                                 * so each phase r is an undilated problem on strided rows */
                                for (idx ph = 0; ph < dw && ph < nw; ph++) {
                                    idx nr = (nw - ph + dw - 1) / dw;
                                    NAME(gw_row)(out, xrow + (c0 + ph) * VL, dw * VL, g + ph * gsw, dw * gsw, nr, k0, k1);
                                }
                            } else {
                                NAME(gw_generic)(out + k0 * VL, xrow + (c0 * sw + k0 * dw) * VL, g, gsw, nw, k1 - k0, sw, dw);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Forward, stride 1 along w, for WB consecutive outputs (accumulators) and FW_JB taps per step:
 *   acc[i] += sum_j x[i + j] * w[j],   x[i] at x + i * xs (xs = VL, or dw * VL for one phase of
 * a dilated row). WB is a compile-time constant at each call.
 * ---------------------------------------------------------------------------------------- */
static inline __attribute__((always_inline)) void NAME(fw_tile)(VT *acc, const T *x, idx xs, const T *w, idx nj,
                                                                const int WB) {
    idx j = 0;
    for (; j + FW_JB <= nj; j += FW_JB) {
        VT wv[FW_JB];
#pragma GCC unroll 16
        for (int k = 0; k < FW_JB; k++) wv[k] = NAME(ld)(w + (j + k) * VL);
#pragma GCC unroll 32
        for (int t = 0; t < WB + FW_JB - 1; t++) {
            VT xv = NAME(ld)(x + (j + t) * xs);
#pragma GCC unroll 16
            for (int k = 0; k < FW_JB; k++) {
                int i = t - k;
                if (i >= 0 && i < WB) acc[i] += xv * wv[k];
            }
        }
    }
    for (; j < nj; j++) {
        VT wv = NAME(ld)(w + j * VL);
#pragma GCC unroll 16
        for (int i = 0; i < WB; i++) acc[i] += NAME(ld)(x + (j + i) * xs) * wv;
    }
}

/* WB outputs m .. m + WB - 1 of one output row (output m at y + m * ys, its first input at
 * x + m * xs within each input row), summed over all kernel rows (kd, kh) */
static inline __attribute__((always_inline)) void NAME(fw_outputs)(T *y, idx ys, const T *xplane, idx xs,
                                                                   const T *wplane, idx m, const idx *q, idx od,
                                                                   idx oh, const int WB) {
    const idx Hn = q[3], Wn = q[4], KD = q[8], KH = q[9], KW = q[10];
    const idx sd = q[11], sh = q[12], dd = q[14], dh = q[15];
    VT acc[FW_WB_MAX];
#pragma GCC unroll 16
    for (int i = 0; i < WB; i++) acc[i] = (VT){0};
    for (idx kd = 0; kd < KD; kd++) {
        for (idx kh = 0; kh < KH; kh++) {
            const T *xrow = xplane + ((od * sd + kd * dd) * Hn + oh * sh + kh * dh) * Wn * VL;
            NAME(fw_tile)(acc, xrow + m * xs, xs, wplane + (kd * KH + kh) * KW * VL, KW, WB);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < WB; i++) NAME(st)(y + (m + i) * ys, acc[i]);
}

/* outputs [0, n) of a row in register tiles of FW_WB, then 4, then 1 */
static inline __attribute__((always_inline)) void NAME(fw_row)(T *y, idx ys, const T *xplane, idx xs, const T *wplane,
                                                               idx n, const idx *q, idx od, idx oh) {
    idx m = 0;
    for (; m + FW_WB <= n; m += FW_WB) NAME(fw_outputs)(y, ys, xplane, xs, wplane, m, q, od, oh, FW_WB);
    for (; m + 4 <= n; m += 4) NAME(fw_outputs)(y, ys, xplane, xs, wplane, m, q, od, oh, 4);
    for (; m < n; m++) NAME(fw_outputs)(y, ys, xplane, xs, wplane, m, q, od, oh, 1);
}

/* ------------------------------------------------------------------------------------------
 * Forward tasks: one task per output row (n, cb, od, oh).
 * xp: (N, CB, Dn, Hn, Wn, VL) padded input; wp: (CB, KD, KH, KW, VL); yp: (N, CB, Do, Ho, Wo, VL)
 * q as for gw_tasks (entries from NG on are unused).
 * ---------------------------------------------------------------------------------------- */
void NAME(fwd_tasks)(const T *xp, const T *wp, T *yp, const idx *q, idx t0, idx t1) {
    const idx CB = q[1], Dn = q[2], Hn = q[3], Wn = q[4];
    const idx Do = q[5], Ho = q[6], Wo = q[7], KD = q[8], KH = q[9], KW = q[10];
    const idx sd = q[11], sh = q[12], sw = q[13], dd = q[14], dh = q[15], dw = q[16];
    for (idx t = t0; t < t1; t++) {
        idx oh = t % Ho, r = t / Ho;
        idx od = r % Do;
        r /= Do;
        idx cb = r % CB, n = r / CB;
        T *y = yp + t * Wo * VL;
        const T *xplane = xp + (n * CB + cb) * Dn * Hn * Wn * VL;
        const T *wplane = wp + cb * KD * KH * KW * VL;
        if (sw == 1 && dw == 1) {
            NAME(fw_row)(y, VL, xplane, VL, wplane, Wo, q, od, oh);
            continue;
        }
        if (sw == 1) {
            /* dilation dw: outputs o = r (mod dw) read inputs r (mod dw) only, so each phase r
             * is an undilated row with strides dw * VL */
            for (idx ph = 0; ph < dw && ph < Wo; ph++) {
                idx nr = (Wo - ph + dw - 1) / dw;
                NAME(fw_row)(y + ph * VL, dw * VL, xplane + ph * VL, dw * VL, wplane, nr, q, od, oh);
            }
            continue;
        }
        /* stride along w: one output at a time */
        for (idx o = 0; o < Wo; o++) {
            VT acc = (VT){0};
            for (idx kd = 0; kd < KD; kd++) {
                for (idx kh = 0; kh < KH; kh++) {
                    const T *xrow = xplane + ((od * sd + kd * dd) * Hn + oh * sh + kh * dh) * Wn * VL + o * sw * VL;
                    const T *wrow = wplane + (kd * KH + kh) * KW * VL;
                    for (idx j = 0; j < KW; j++) acc += NAME(ld)(xrow + j * dw * VL) * NAME(ld)(wrow + j * VL);
                }
            }
            NAME(st)(y + o * VL, acc);
        }
    }
}

#undef VL
