/*
 * 1-D depthwise convolution directly on "NCW" rows: tensors whose length axis is contiguous,
 * one (sample, channel) row at a time, vectorised along the length axis.
 *
 * The channel-blocked kernels of dwconv_impl.c need the input packed (a transposition of the
 * whole tensor) and the result unpacked; for a 1-D NCW tensor those two copies cost more than
 * the convolution itself up to K ~ 100. Here a row is only copied into a zero-padded scratch
 * row (contiguous, cache resident), and a vector holds VL neighbouring positions of one channel.
 *
 * Taps are grouped into "phases" so the register tiles of dwconv_impl.c apply unchanged. With
 * dilation 1, taps j0, j0 + VL, j0 + 2 VL, ... (phase j0) read input vectors exactly one vector
 * apart, the same structure as channel-blocked taps one position apart: output vector i and tap m
 * of phase j0 read the input vector at (i + m) * VL + j0. So fw_tile / gw_row run on each phase
 * with broadcast weights, reusing every input vector load for several taps. With dilation > 1
 * every tap is its own phase (offset j * dilation).
 *
 * Included by dwconv.c after dwconv_impl.c, with T, VT and NAME defined.
 * (A .c file rather than a header so that the package's "*.c" data glob ships it.)
 */
#ifndef NAME
#error "ncw1d_impl.c is a template included by dwconv.c; do not compile it on its own"
#endif

#define VL ((idx)(64 / sizeof(T)))

/* dst[i] = src[i - lo] for 0 <= i - lo < L, else 0; i in [0, n). lo may be negative (cropping). */
static void NAME(ncw_fill)(T *dst, const T *src, idx L, idx lo, idx n) {
    idx a = lo < 0 ? 0 : (lo < n ? lo : n);
    idx b = lo + L < n ? lo + L : n;
    if (b < a) b = a;
    memset(dst, 0, (size_t)a * sizeof(T));
    if (b > a) memcpy(dst + a, src + (a - lo), (size_t)(b - a) * sizeof(T));
    memset(dst + b, 0, (size_t)(n - b) * sizeof(T));
}

/* Phases of a K-tap kernel with dilation dil: phase p starts at input offset off[p] and holds
 * cnt[p] taps, tap m being tap[p] + step * m (step = VL when dil == 1, unused otherwise).
 * Returns the number of phases (<= K). */
static idx NAME(ncw_phases)(idx K, idx dil, idx *off, idx *cnt, idx *first) {
    if (dil == 1) {
        idx np = K < VL ? K : VL;
        for (idx p = 0; p < np; p++) {
            off[p] = p;
            first[p] = p;
            cnt[p] = (K - p + VL - 1) / VL;
        }
        return np;
    }
    for (idx j = 0; j < K; j++) {
        off[j] = j * dil;
        first[j] = j;
        cnt[j] = 1;
    }
    return K;
}

/* round a count of T up to whole 64-byte vectors */
static inline idx NAME(ncw_round)(idx n) { return (n + VL - 1) / VL * VL; }

/* Scratch of one task range: padded input row, output/gradient row, per-phase vectors and
 * tap tables. One allocation, 64-byte aligned; NULL when out of memory. */
static void *NAME(ncw_scratch)(idx n_in, idx n_row, idx n_vec, idx K, T **xs, T **rs, T **vecs, idx **tabs) {
    size_t bytes_t = (size_t)(NAME(ncw_round)(n_in) + NAME(ncw_round)(n_row) + n_vec * VL) * sizeof(T);
    size_t bytes = bytes_t + (size_t)(3 * K + 8) * sizeof(idx);
    bytes = (bytes + 63) / 64 * 64;
    void *mem = aligned_alloc(64, bytes);
    if (!mem) return NULL;
    *xs = (T *)mem;
    *rs = *xs + NAME(ncw_round)(n_in);
    *vecs = *rs + NAME(ncw_round)(n_row);
    *tabs = (idx *)((char *)mem + bytes_t);
    return mem;
}

/* WB output vectors starting at vector v: acc[i] = sum over phases of fw_tile */
static inline __attribute__((always_inline)) void NAME(ncw_fw_outputs)(T *ys, const T *xs, const T *wb, idx np,
                                                                       const idx *off, const idx *cnt, idx v,
                                                                       const int WB) {
    VT acc[FW_WB_MAX];
#pragma GCC unroll 16
    for (int i = 0; i < WB; i++) acc[i] = (VT){0};
    const T *wp = wb;
    for (idx p = 0; p < np; p++) {
        NAME(fw_tile)(acc, xs + v * VL + off[p], VL, wp, cnt[p], WB);
        wp += cnt[p] * VL;
    }
#pragma GCC unroll 16
    for (int i = 0; i < WB; i++) NAME(st)(ys + (v + i) * VL, acc[i]);
}

/* ------------------------------------------------------------------------------------------
 * Forward: y[n, c, o] = sum_j w[c, j] * x[n, c, o + j * dil - lo], o < Lo (stride 1).
 * Tasks are rows r = n * C + c in [r0, r1). x rows have unit stride along the length.
 * p = {N, C, L, sxn, sxc, K, lo, dil, Lo, syn, syc}. Returns 0, or 1 when out of memory.
 * ---------------------------------------------------------------------------------------- */
int NAME(ncw_fwd)(const T *x, const T *w, T *y, const idx *p, idx r0, idx r1) {
    const idx C = p[1], L = p[2], sxn = p[3], sxc = p[4], K = p[5], lo = p[6], dil = p[7];
    const idx Lo = p[8], syn = p[9], syc = p[10];
    const idx nvec = (Lo + VL - 1) / VL;
    const idx n_in = nvec * VL + (K - 1) * dil + VL; /* everything the last tiles may read */
    T *xs, *ys, *wb;
    idx *tabs;
    void *mem = NAME(ncw_scratch)(n_in, nvec * VL, K, K, &xs, &ys, &wb, &tabs);
    if (!mem) return 1;
    idx *off = tabs, *cnt = tabs + K, *first = tabs + 2 * K;
    const idx np = NAME(ncw_phases)(K, dil, off, cnt, first);
    const idx step = dil == 1 ? VL : 0;
    for (idx r = r0; r < r1; r++) {
        const idx n = r / C, c = r % C;
        NAME(ncw_fill)(xs, x + n * sxn + c * sxc, L, lo, n_in);
        /* broadcast weights in phase order: phase p's taps are consecutive vectors */
        T *wq = wb;
        for (idx q = 0; q < np; q++)
            for (idx m = 0; m < cnt[q]; m++, wq += VL) NAME(st)(wq, (VT){0} + w[c * K + first[q] + step * m]);
        idx v = 0;
        for (; v + FW_WB <= nvec; v += FW_WB) NAME(ncw_fw_outputs)(ys, xs, wb, np, off, cnt, v, FW_WB);
        for (; v + 4 <= nvec; v += 4) NAME(ncw_fw_outputs)(ys, xs, wb, np, off, cnt, v, 4);
        for (; v < nvec; v++) NAME(ncw_fw_outputs)(ys, xs, wb, np, off, cnt, v, 1);
        memcpy(y + n * syn + c * syc, ys, (size_t)Lo * sizeof(T));
    }
    free(mem);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Weight gradient: gw[c, j] = sum_n sum_o g[n, c, o] * x[n, c, o + j * dil - lo] (stride 1).
 * Tasks are channels c in [c0, c1) (each sums over all samples, so tasks write disjoint
 * outputs). Per row the products are summed in T vectors (one per tap), then reduced into a
 * double per tap: a two-level sum. x and g rows have unit stride along the length.
 * p = {N, C, L, sxn, sxc, K, lo, dil, Lo, sgn, sgc}. Returns 0, or 1 when out of memory.
 * ---------------------------------------------------------------------------------------- */
int NAME(ncw_gw)(const T *x, const T *g, T *gw, const idx *p, idx c0, idx c1) {
    const idx N = p[0], L = p[2], sxn = p[3], sxc = p[4], K = p[5], lo = p[6], dil = p[7];
    const idx Lo = p[8], sgn = p[9], sgc = p[10];
    const idx nvec = (Lo + VL - 1) / VL;
    const idx n_in = nvec * VL + (K - 1) * dil + VL;
    T *xs, *gs, *acc;
    idx *tabs;
    /* K per-tap vectors, then room for K doubles (64-byte vectors of them) */
    const idx dvecs = (K * (idx)sizeof(double) + 63) / 64;
    void *mem = NAME(ncw_scratch)(n_in, nvec * VL, K + dvecs, K, &xs, &gs, &acc, &tabs);
    if (!mem) return 1;
    double *dacc = (double *)(acc + K * VL);
    idx *off = tabs, *cnt = tabs + K, *first = tabs + 2 * K;
    const idx np = NAME(ncw_phases)(K, dil, off, cnt, first);
    const idx step = dil == 1 ? VL : 0;
    for (idx c = c0; c < c1; c++) {
        for (idx j = 0; j < K; j++) dacc[j] = 0.0;
        for (idx n = 0; n < N; n++) {
            NAME(ncw_fill)(xs, x + n * sxn + c * sxc, L, lo, n_in);
            NAME(ncw_fill)(gs, g + n * sgn + c * sgc, Lo, 0, nvec * VL);
            memset(acc, 0, (size_t)(K * VL) * sizeof(T));
            /* chunks of the row keep the gradient slice in L1 while every phase sweeps it */
            for (idx v0 = 0; v0 < nvec; v0 += GW_CHUNK) {
                idx nw = nvec - v0 < GW_CHUNK ? nvec - v0 : GW_CHUNK;
                T *ap = acc;
                for (idx q = 0; q < np; q++) {
                    NAME(gw_row)(ap, xs + v0 * VL + off[q], VL, gs + v0 * VL, VL, nw, 0, cnt[q]);
                    ap += cnt[q] * VL;
                }
            }
            const T *ap = acc;
            for (idx q = 0; q < np; q++)
                for (idx m = 0; m < cnt[q]; m++, ap += VL) {
                    double s = 0.0;
                    for (idx l = 0; l < VL; l++) s += (double)ap[l];
                    dacc[first[q] + step * m] += s;
                }
        }
        for (idx j = 0; j < K; j++) gw[c * K + j] = (T)dacc[j];
    }
    free(mem);
    return 0;
}

#undef VL
