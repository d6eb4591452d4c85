/*
 * quant.h — block quantization formats: dequantization, quantization of activations and dot
 * products, with a scalar reference (src/quant/ref_*.c) and AVX2 / AVX-512 variants chosen once at
 * start-up from CPUID + XGETBV. REALM_ISA=scalar|avx2|avx512 forces a choice.
 *
 * Dot products pair a weight row of type T with an activation row in T's `vec_dot_type`
 * (Q8_0 for the 32-element formats, Q8_K for the K-quants, F32 for F32/F16/BF16 weights), as
 * llama.cpp does, so results match its numerics.
 *
 * Thread rule: the ops tables are immutable after realm_quant_init (which runs on first use and is
 * thread-safe); all kernels are pure functions of their arguments.
 */
#ifndef REALM_QUANT_H
#define REALM_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "realm/types.h"

enum realm_isa {
    REALM_ISA_SCALAR = 0,
    REALM_ISA_AVX2 = 1,
    REALM_ISA_AVX512 = 2,
    REALM_ISA_COUNT = 3,
};

struct realm_quant_ops {
    uint32_t type;         /* enum realm_type of the weights */
    uint32_t vec_dot_type; /* format the activation row must be in for vec_dot */
    /* y[0..n) = dequantized x; n a multiple of the block size */
    void (*dequantize_row)(const void *x, float *y, int64_t n);
    /* quantize an f32 row into this type (used for activations: Q8_0, Q8_K; F32 copies) */
    void (*quantize_row)(const float *x, void *y, int64_t n);
    /* *s = dot(x: weight row of `type`, y: row of `vec_dot_type`), n elements */
    void (*vec_dot)(int64_t n, float *s, const void *x, const void *y);
};

/* Selects the ISA (idempotent, thread-safe). */
void realm_quant_init(void);
/* The ISA in use and its name ("scalar", "avx2", "avx512"). */
enum realm_isa realm_quant_isa(void);
const char *realm_quant_isa_name(enum realm_isa isa);
/* Whether this CPU and OS support `isa`. */
int realm_quant_isa_supported(enum realm_isa isa);

/* Ops for a type with the dispatched ISA, or NULL if the type is unsupported.
 * Lifetime: static. */
const struct realm_quant_ops *realm_quant_ops(uint32_t type);
/* Ops for a type with a specific ISA (tests compare every variant against the scalar one);
 * NULL if unsupported or the ISA is not available on this CPU. */
const struct realm_quant_ops *realm_quant_ops_isa(uint32_t type, enum realm_isa isa);

/*
 * out[b * out_stride + r] = dot(W row r, act row b) for r in [r0, r1), b in [0, n_b).
 * W: rows of `w_row_bytes` bytes of ops->type, each of k elements. act: n_b rows of
 * `act_row_bytes` bytes each, already in ops->vec_dot_type. This is the batched kernel every
 * projection goes through: it reads each weight block once for all n_b activation rows.
 */
void realm_quant_matmul(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes, int64_t k,
                        int64_t r0, int64_t r1, const void *act, size_t act_row_bytes, int64_t n_b,
                        float *out, int64_t out_stride);

/* fp16 / bf16 conversions (IEEE half, round to nearest even). */
float realm_f16_to_f32(uint16_t h);
uint16_t realm_f32_to_f16(float f);
float realm_bf16_to_f32(uint16_t h);

#endif
