/*
 * simd_x86.h (internal) — what the two x86 kernel files share: the forced-inline and full-unroll
 * attributes, the software prefetch, and the tags of the K-quant formats. Included only by
 * kern_x86.c (compiled once per ISA) and lanes_avx512.c, with their ISA flags on.
 *
 * Thread rule: definitions only.
 */
#ifndef REALM_QUANT_SIMD_X86_H
#define REALM_QUANT_SIMD_X86_H

#include <immintrin.h>
#include <stddef.h>

#include "quant/quant.h"

#define KX_INLINE static inline __attribute__((always_inline))
#if defined(__clang__)
#define KX_UNROLL _Pragma("clang loop unroll(full)")
#else
#define KX_UNROLL _Pragma("GCC unroll 8")
#endif

/* Prefetch `bytes` at p (the matching slice of the next tile's rows: with several rows read in
 * parallel, each row is too short a stream for the hardware prefetcher to ramp up). */
KX_INLINE void kx_prefetch(const char *p, size_t bytes) {
    if (!p) return;
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

/* The K-quant formats, a constant argument of the inlined kernels (one copy per format). */
enum { KX_Q2_K, KX_Q3_K, KX_Q4_K, KX_Q5_K, KX_Q6_K };

#endif
