/*
 * Channels-last per-(sample, channel) reductions and rescalings, one element type per inclusion:
 * the memory-bound building blocks of Global Response Normalisation (GRN) in one pass each.
 *
 * Included by dwconv.c with T (scalar type), VT (a 64-byte GCC vector of T) and NAME(x) defined,
 * after dwconv_impl.c (whose VL, ld and st it uses). Tensors are contiguous (N, S, C): S spatial
 * positions of C channels, so VL neighbouring channels of one position are one vector.
 *
 * (A .c file rather than a header so that the package's "*.c" data glob ships it.)
 */
#ifndef NAME
#error "grn_impl.c is a template included by dwconv.c; do not compile it on its own"
#endif

/* positions summed in T before the partial sum is added to the double accumulator: keeps a
 * float32 reduction over thousands of positions as accurate as a double one, at vector speed */
#define RED_CHUNK 64
#define VL ((idx)(64 / sizeof(T)))

/* ------------------------------------------------------------------------------------------
 * out_ab[n, c] = sum_s a[n, s, c] * b[n, s, c]   (b == NULL: a * a)
 * out_a[n, c]  = sum_s a[n, s, c]                (only when out_a != NULL)
 * Both in double. Tasks t in [t0, t1) are (sample n, channel block cb) pairs, t = n * CB + cb.
 * p = {N, S, C}
 * ---------------------------------------------------------------------------------------- */
void NAME(rows_reduce)(const T *a, const T *b, double *out_ab, double *out_a, const idx *p, idx t0, idx t1) {
    const idx S = p[1], C = p[2];
    const idx CB = (C + VL - 1) / VL;
    for (idx t = t0; t < t1; ++t) {
        const idx n = t / CB, c0 = (t % CB) * VL;
        const idx lanes = C - c0 < VL ? C - c0 : VL;
        const T *pa = a + n * S * C + c0;
        const T *pb = b ? b + n * S * C + c0 : pa;
        double acc_ab[VL], acc_a[VL];
        for (idx l = 0; l < VL; ++l) acc_ab[l] = acc_a[l] = 0.0;
        if (lanes == VL) {
            for (idx s0 = 0; s0 < S; s0 += RED_CHUNK) {
                const idx s1 = s0 + RED_CHUNK < S ? s0 + RED_CHUNK : S;
                VT vab = {0}, va = {0};
                for (idx s = s0; s < s1; ++s) {
                    const VT x = NAME(ld)(pa + s * C);
                    const VT y = NAME(ld)(pb + s * C);
                    vab += x * y;
                    va += x;
                }
                for (idx l = 0; l < VL; ++l) {
                    acc_ab[l] += (double)vab[l];
                    acc_a[l] += (double)va[l];
                }
            }
        } else {  /* the last, partial channel block */
            for (idx s = 0; s < S; ++s)
                for (idx l = 0; l < lanes; ++l) {
                    const double x = (double)pa[s * C + l];
                    acc_ab[l] += x * (double)pb[s * C + l];
                    acc_a[l] += x;
                }
        }
        for (idx l = 0; l < lanes; ++l) {
            out_ab[n * C + c0 + l] = acc_ab[l];
            if (out_a) out_a[n * C + c0 + l] = acc_a[l];
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * out[n, s, c] = a[n, s, c] * sa[n, c] (+ b[n, s, c] * sb[n, c] when b != NULL)
 *                (+ bias[c] when bias != NULL)
 * Rows r in [r0, r1) are positions, r = n * S + s. out may alias a or b (elementwise).
 * p = {N, S, C}
 * ---------------------------------------------------------------------------------------- */
void NAME(rows_combine)(const T *a, const T *sa, const T *b, const T *sb, const T *bias, T *out, const idx *p,
                        idx r0, idx r1) {
    const idx S = p[1], C = p[2];
    const idx Cv = C - C % VL;
    for (idx r = r0; r < r1; ++r) {
        const idx n = r / S;
        const T *ra = a + r * C, *rb = b ? b + r * C : NULL;
        const T *sca = sa + n * C, *scb = b ? sb + n * C : NULL;
        T *ro = out + r * C;
        idx c = 0;
        for (; c < Cv; c += VL) {
            VT v = NAME(ld)(ra + c) * NAME(ld)(sca + c);
            if (rb) v += NAME(ld)(rb + c) * NAME(ld)(scb + c);
            if (bias) v += NAME(ld)(bias + c);
            NAME(st)(ro + c, v);
        }
        for (; c < C; ++c) {
            T v = ra[c] * sca[c];
            if (rb) v += rb[c] * scb[c];
            if (bias) v += bias[c];
            ro[c] = v;
        }
    }
}

#undef RED_CHUNK
#undef VL
