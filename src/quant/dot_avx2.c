/*
 * dot_avx2.c — the avx2 variants of the dot and batched matmul kernels: AVX2 + FMA + F16C (16 ymm
 * registers): maddubs/madd integer dots. The kernels themselves are in kern_x86.h, shared with the
 * other x86 variant; CMake compiles this file with the avx2 flags (files named *_avx2*.c), and
 * dispatch.c calls quant_fill_ops_avx2 only when CPUID + XGETBV report the ISA. Dequantization and
 * the other activation quantizers keep the scalar kernels in this table; quantize_row_q8_K has a
 * vectorized variant in kern_x86.h, bit-identical to the scalar one.
 *
 * Thread rule: pure functions.
 */
#include "quant/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "quant/kern_x86.h"

int quant_fill_ops_avx2(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    return kx_fill(tab);
}
#else
/* Built without the avx2 flags (not x86): no variants. */
int quant_fill_ops_avx2(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    (void)tab;
    return 0;
}
#endif
