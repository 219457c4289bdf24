/*
 * Compiled CPU kernels for depthwise convolution (largekernel.ops.cpu_kernels).
 *
 * Plain C11 with GCC vector extensions: a 64-byte vector type maps onto one AVX-512 register,
 * or two AVX2 registers, so the same source serves both; tile sizes shrink without AVX-512 so
 * that the register-blocked accumulators still fit in 16 registers. No OpenMP and no threads
 * here: every entry point processes a [t0, t1) range of independent tasks and the Python side
 * runs ranges concurrently (ctypes releases the GIL).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t idx;

/* tile sizes; overridable with -D for tuning experiments */
#if defined(__AVX512F__)
#define GW_WB_DEFAULT 8     /* outputs per grad-weight register tile */
#define FW_WB_DEFAULT 12    /* outputs (accumulators) per forward register tile */
#define FW_JB_DEFAULT 4     /* taps per forward register tile */
#else
#define GW_WB_DEFAULT 2
#define FW_WB_DEFAULT 4
#define FW_JB_DEFAULT 2
#endif
#ifndef GW_WB
#define GW_WB GW_WB_DEFAULT
#endif
#ifndef FW_WB
#define FW_WB FW_WB_DEFAULT
#endif
#ifndef FW_JB
#define FW_JB FW_JB_DEFAULT
#endif
#define GW_JB_MAX 8 /* taps (accumulators) per grad-weight register tile */
#define FW_WB_MAX 16 /* bound on FW_WB */
#ifndef GW_CHUNK
#define GW_CHUNK 128 /* output columns per L1-resident chunk of a row */
#endif
#define PACK_BLOCK 256 /* columns per L1-resident block when packing */

typedef float v16sf __attribute__((vector_size(64)));
typedef double v8df __attribute__((vector_size(64)));

#define T float
#define VT v16sf
#define NAME(x) x##_f32
#include "dwconv_impl.c"
#include "grn_impl.c"
#include "ncw1d_impl.c"
#undef T
#undef VT
#undef NAME

#define T double
#define VT v8df
#define NAME(x) x##_f64
#include "dwconv_impl.c"
#include "grn_impl.c"
#include "ncw1d_impl.c"
#undef T
#undef VT
#undef NAME

/* ABI version of this library, checked by the loader. */
int lk_dwconv_abi_version(void) { return 4; }
