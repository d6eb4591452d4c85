/*
 * quant.h — block quantization formats: dequantization, quantization of activations and dot
 * products, with a scalar reference (src/quant/ref_*.c) and AVX2 / AVX-512 variants chosen once at
 * start-up from CPUID + XGETBV. REALM_ISA=scalar|avx2|avx512 forces a choice.
 *
 * Dot products pair a weight row of type T with an activation row in T's `vec_dot_type`, as
 * llama.cpp does, so results match its numerics: Q8_0 for Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 /
 * Q5_1 (its stored block sum serves the min term), Q8_K for the K-quants, and F32 for F32 / F16
 * / BF16 weights (llama.cpp converts activations to F16 / BF16 there; realm keeps them F32).
 * Always quantize activations with realm_quant_ops(ops->vec_dot_type)->quantize_row.
 * Activation quantizers reproduce llama.cpp's quantize_row_q8_0_ref / _q8_1_ref / _q8_K_ref bit
 * for bit, in every ISA variant.
 *
 * Numerics across ISAs: dequantize_row is exact (bit-identical in every variant); vec_dot of a
 * SIMD variant differs from the scalar reference by float summation order only (integer block
 * sums are exact); the AVX-512 kernels of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (vec_dot, matmul and
 * matmul_packed) take the scalar reference's float steps and equal it bit for bit. Within one
 * ISA, realm_quant_matmul gives results bit-identical to ops->vec_dot for every n_b (each
 * (row, batch) dot uses the same operation sequence).
 *
 * Implemented types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K as weights;
 * Q8_0, Q8_1, Q8_K (and F32 / F16 / BF16) as activations. quantize_row is NULL for the
 * K-quants (realm does not create K-quant weights); realm_quant_ops returns NULL for other types.
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

struct realm_quant_ops;

/* The batched kernels' signatures: a table entry takes exactly the arguments of its public
 * wrapper (realm_quant_matmul, realm_quant_matmul_packed, documented below), which checks them
 * and passes them on unchanged. */
typedef void realm_quant_matmul_fn(const struct realm_quant_ops *ops, const void *W,
                                   size_t w_row_bytes, int64_t k, int64_t r0, int64_t r1,
                                   const void *act, size_t act_row_bytes, int64_t n_b, float *out,
                                   int64_t out_stride);
typedef void realm_quant_matmul_packed_fn(const struct realm_quant_ops *ops, const void *P,
                                          int64_t k, int64_t r0, int64_t r1, const void *act,
                                          size_t act_row_bytes, int64_t n_b, float *out,
                                          int64_t out_stride);

struct realm_quant_ops {
    uint32_t type;         /* enum realm_type of the weights */
    uint32_t vec_dot_type; /* format the activation row must be in for vec_dot */
    /* y[0..n) = dequantized x; n a multiple of the block size */
    void (*dequantize_row)(const void *x, float *y, int64_t n);
    /* quantize an f32 row into this type (activations: Q8_0, Q8_1, Q8_K, F16, BF16; F32 copies;
     * also Q4_0 / Q4_1 / Q5_0 / Q5_1 weights as llama.cpp's _ref quantizers); NULL for K-quants */
    void (*quantize_row)(const float *x, void *y, int64_t n);
    /* *s = dot(x: weight row of `type`, y: row of `vec_dot_type`), n elements; NULL for the
     * activation-only types Q8_1 and Q8_K */
    void (*vec_dot)(int64_t n, float *s, const void *x, const void *y);
    /* The batched kernel behind realm_quant_matmul (call that instead; same arguments). */
    realm_quant_matmul_fn *matmul;
    /* The batched kernel over a prepacked copy (realm_quant_prepack) behind
     * realm_quant_matmul_packed (call that instead; same arguments). NULL where this table has
     * no packed layout. */
    realm_quant_matmul_packed_fn *matmul_packed;
};

/* Selects the ISA (idempotent, thread-safe): the best one this CPU and OS support (AVX-512 needs
 * F, BW, VL, DQ and VNNI plus OS-enabled ZMM state; AVX2 needs FMA and F16C too), unless
 * $REALM_ISA names one: "scalar", "avx2" or "avx512". A $REALM_ISA value that is unknown or not
 * supported here is not fatal: a warning naming the value and the ISA used instead is logged and
 * the best supported ISA is used. */
void realm_quant_init(void);
/* The ISA in use and its name ("scalar", "avx2", "avx512"). */
enum realm_isa realm_quant_isa(void);
const char *realm_quant_isa_name(enum realm_isa isa);
/* Whether this CPU and OS support `isa`. */
int realm_quant_isa_supported(enum realm_isa isa);

/* Ops for a type with the dispatched ISA, or NULL if the type is unsupported. Entries a variant
 * has no kernel for hold the scalar (or next lower ISA's) kernel.
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
 * k must be a multiple of the block size of ops->type; ops must come from realm_quant_ops*().
 * Rows must be aligned to their block struct (4 bytes for Q8_K activations, 2 for the others;
 * GGUF tensor data always is). Results are bit-identical to calling ops->vec_dot for each (r, b).
 * Cost: one pass over W rows [r0, r1) per 64 activation rows (SIMD tiles of 4 weight rows x up
 * to 4 activation rows); splitting [r0, r1) between threads keeps that. Thread-safe (callers
 * write disjoint out).
 */
void realm_quant_matmul(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes,
                        int64_t k, int64_t r0, int64_t r1, const void *act, size_t act_row_bytes,
                        int64_t n_b, float *out, int64_t out_stride);

/*
 * Prepacked weights: a copy of a whole weight matrix in a layout made for the batched kernel of
 * the ISA in use (today: the AVX-512 table, Q4_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: 16 rows
 * interleaved by dwords, the same byte count as the original, rounded up to 16 rows and for the
 * 32-element formats to 64 bytes per 16 rows), made once at load so that no call repacks. Decode
 * (n_b = 1, 2) runs from it too, so the original rows need not be read again.
 *
 * realm_quant_prepack: *out = a new packed copy of rows [0, rows) of W (k elements each,
 * `w_row_bytes` apart), or NULL when ops has no packed layout (other types and ISAs: not an
 * error; keep using realm_quant_matmul on W). Returns REALM_OK, REALM_E_INVALID (bad shape) or
 * REALM_E_NOMEM.
 * Ownership: the caller owns *out and frees it with realm_quant_packed_free; it does not borrow W
 * (W may be unmapped afterwards). Valid only with the same ops (same type and ISA table).
 *
 * realm_quant_matmul_packed: as realm_quant_matmul over the packed copy P, but out is relative to
 * r0: out[b * out_stride + (r - r0)] = dot(row r, act row b) for r in [r0, r1) (any range within
 * the packed rows; whole 16-row groups are computed, only rows in range are written; ranges that
 * start on a multiple of 16 waste nothing). Results are bit-identical to ops->vec_dot on the
 * original rows, for every n_b (and so to realm_quant_matmul). Thread-safe (disjoint out).
 */
int realm_quant_prepack(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes,
                        int64_t rows, int64_t k, void **out);
void realm_quant_packed_free(void *P);
void realm_quant_matmul_packed(const struct realm_quant_ops *ops, const void *P, int64_t k,
                               int64_t r0, int64_t r1, const void *act, size_t act_row_bytes,
                               int64_t n_b, float *out, int64_t out_stride);

/* fp16 / bf16 conversions (IEEE half, round to nearest even). */
float realm_f16_to_f32(uint16_t h);
uint16_t realm_f32_to_f16(float f);
float realm_bf16_to_f32(uint16_t h);

#endif
