/*
 * dot_avx512.c — the AVX-512 variants of the dot and batched matmul kernels: AVX-512
 * F/BW/VL/DQ/VNNI (32 registers, larger tiles), vpdpbusd / vpdpwssd integer dots on 256-bit
 * vectors, mask moves for the Q5 bits. The kernels themselves are in kern_x86.h, shared with
 * dot_avx2.c; CMake compiles this file with the AVX-512 flags (files named *_avx512*.c), and
 * dispatch.c calls quant_fill_ops_avx512 only when CPUID + XGETBV report the ISA.
 * Dequantization and the other activation quantizers keep the scalar kernels in this table;
 * quantize_row_q8_K has a vectorized variant in kern_x86.h, bit-identical to the scalar one.
 *
 * Thread rule: pure functions.
 */
#include "quant/quant.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) &&                      \
    defined(__AVX512VNNI__)
#include "quant/kern_x86.h"

int quant_fill_ops_avx512(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    return kx_fill(tab);
}
#else
/* Built without the avx512 flags (not x86): no variants. */
int quant_fill_ops_avx512(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    (void)tab;
    return 0;
}
#endif
