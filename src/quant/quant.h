/*
 * quant.h (internal) — the kernels behind include/realm/quant.h: scalar reference functions
 * (ref_*.c, the spec every SIMD variant is tested against), the generic matmul, the fp16/bf16
 * helpers inlined into the kernels, and the hooks through which the ISA builds of kern_x86.c
 * (and lanes_avx512.c) put their variants into the dispatch tables (dispatch.c).
 *
 * Naming follows ggml: quant_dequantize_row_<t>, quant_quantize_row_<t> (the llama.cpp *_ref
 * quantizers, reproduced exactly), quant_vec_dot_<t>_<u> (t = weights, u = activations).
 * Every kernel takes (void *) block pointers so that all fit the function-pointer types of
 * struct realm_quant_ops; n is an element count, a multiple of the block size (asserted).
 *
 * Thread rule: pure functions.
 */
#ifndef REALM_QUANT_INTERNAL_H
#define REALM_QUANT_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "quant/blocks.h"
#include "realm/quant.h"

/* ---- fp16 / bf16 (inline so that the scalar kernels pay no call) ---- */

static inline uint32_t quant_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float quant_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Exact: every binary16 value is representable in binary32. */
static inline float quant_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return quant_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, nan */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        const float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return quant_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Round to nearest, ties to even (what F16C's vcvtps2ph with imm 0 does); NaN -> quiet NaN
 * 0x7e00 with the sign kept, overflow -> inf. */
static inline uint16_t quant_f32_to_f16(float f) {
    uint32_t x = quant_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {
        /* below 2^-14: a subnormal half, value round(f * 2^24) */
        if (x <= 0x33000000u) return sign; /* <= 2^-25: ties to the even zero */
        const uint32_t e = x >> 23;        /* 102 .. 112 */
        const uint32_t m = (x & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++; /* may carry into the smallest normal */
        return (uint16_t)(sign | r);
    }
    x += 0xfffu + ((x >> 13) & 1u); /* round the 13 dropped bits to nearest even */
    return (uint16_t)(sign | ((x - 0x38000000u) >> 13));
}

static inline float quant_bf16_to_f32(uint16_t h) {
    return quant_bits_f32((uint32_t)h << 16);
}

/* As ggml's GGML_FP32_TO_BF16: round to nearest even, NaN kept quiet. */
static inline uint16_t quant_f32_to_bf16(float f) {
    const uint32_t u = quant_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64u);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

/* llama.cpp nearest_int: round to nearest even through the 1.5 * 2^23 magic number; valid for
 * |f| <= 2^22. Used by the K-quant quantizers (q8_K) so that ties round exactly as there. */
static inline int quant_nearest_int(float f) {
    const float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- kernel function types (the fields of struct realm_quant_ops) ---- */

typedef void (*quant_dequantize_fn)(const void *x, float *y, int64_t n);
typedef void (*quant_quantize_fn)(const float *x, void *y, int64_t n);
typedef void (*quant_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);

/* ---- scalar reference (ref_float.c) ---- */
void quant_dequantize_row_f32(const void *x, float *y, int64_t n);
void quant_quantize_row_f32(const float *x, void *y, int64_t n);
void quant_vec_dot_f32_f32(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_f16(const void *x, float *y, int64_t n);
void quant_quantize_row_f16(const float *x, void *y, int64_t n);
void quant_vec_dot_f16_f32(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_bf16(const void *x, float *y, int64_t n);
void quant_quantize_row_bf16(const float *x, void *y, int64_t n);
void quant_vec_dot_bf16_f32(int64_t n, float *s, const void *x, const void *y);

/* ---- ref_q8.c: q8_0, q8_1, q8_K ---- */
void quant_dequantize_row_q8_0(const void *x, float *y, int64_t n);
void quant_quantize_row_q8_0(const float *x, void *y, int64_t n);
void quant_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q8_1(const void *x, float *y, int64_t n);
void quant_quantize_row_q8_1(const float *x, void *y, int64_t n);
void quant_dequantize_row_q8_K(const void *x, float *y, int64_t n);
void quant_quantize_row_q8_K(const float *x, void *y, int64_t n);

/* ---- ref_q4.c / ref_q5.c: the other 32-element formats ---- */
void quant_dequantize_row_q4_0(const void *x, float *y, int64_t n);
void quant_quantize_row_q4_0(const float *x, void *y, int64_t n);
void quant_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q4_1(const void *x, float *y, int64_t n);
void quant_quantize_row_q4_1(const float *x, void *y, int64_t n);
void quant_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q5_0(const void *x, float *y, int64_t n);
void quant_quantize_row_q5_0(const float *x, void *y, int64_t n);
void quant_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q5_1(const void *x, float *y, int64_t n);
void quant_quantize_row_q5_1(const float *x, void *y, int64_t n);
void quant_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *x, const void *y);

/* ---- ref_k.c: K-quants (dequantize + dot with q8_K; weight quantizers are not provided) ---- */
void quant_dequantize_row_q2_K(const void *x, float *y, int64_t n);
void quant_vec_dot_q2_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q3_K(const void *x, float *y, int64_t n);
void quant_vec_dot_q3_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q4_K(const void *x, float *y, int64_t n);
void quant_vec_dot_q4_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q5_K(const void *x, float *y, int64_t n);
void quant_vec_dot_q5_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void quant_dequantize_row_q6_K(const void *x, float *y, int64_t n);
void quant_vec_dot_q6_K_q8_K(int64_t n, float *s, const void *x, const void *y);

/* Unpacks the 6-bit scale and min of sub-block j (0..7) of a q4_K / q5_K block
 * (ggml get_scale_min_k4). */
static inline void quant_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* ---- matmul.c ---- */

/* The generic batched kernel: out[b*out_stride + r] = vec_dot(W row r, act row b) for r in
 * [r0, r1), b < n_b, with ops->vec_dot (so n_b > 1 gives bit-identical results to n_b single
 * dots). */
realm_quant_matmul_fn quant_matmul_generic;

/* ---- the prepacked q4_K / q6_K layout (realm_quant_prepack; AVX-512 table only) ----
 * Rows are taken 16 at a time (a group; the last one padded with zero rows); a group's
 * super-blocks follow each other, and each packed super-block holds the bytes of that block of
 * the 16 rows transposed by dwords: field[c][r] = dword c of the corresponding field of row r,
 * so one 512-bit load gives the same 4 bytes of all 16 rows (one int32 lane per row). The bytes
 * themselves are unchanged (same size as the original, 64-byte aligned). */
#define QUANT_PACK_ROWS 16
struct quant_pack_q4_K {
    uint32_t dm[16];     /* d | dmin << 16 */
    uint32_t sc[3][16];  /* scales[12] */
    uint32_t qs[32][16]; /* qs[128] */
};
_Static_assert(sizeof(struct quant_pack_q4_K) == 16 * sizeof(block_q4_K), "q4_K pack size");
struct quant_pack_q6_K { /* read front to back: the scales first */
    uint32_t d[16];      /* d (zero-extended) */
    uint32_t sc[4][16];  /* scales[16] */
    uint32_t ql[32][16]; /* ql[128] */
    uint32_t qh[16][16]; /* qh[64] */
};

/* ---- the prepacked 32-element formats (q4_0, q4_1, q5_0, q5_1, q8_0; AVX-512 table only) ----
 * Rows are taken 16 at a time as above; a group holds its nb = k / 32 blocks as planes (so that
 * every 512-bit load is aligned and holds one int32 lane per row), the group padded to a
 * multiple of 64 bytes (quant_pack32_geom):
 *   qs  nb x nq x 16 dwords: [i][c][r] = dword c of the quants of row r in block i; nq = 4 for
 *       the 4- and 5-bit formats (nibbles as stored), 8 for q8_0 (stored as q ^ 0x80, i.e. the
 *       quant + 128 as an unsigned byte, the operand vpdpbusd takes);
 *   qh  (q5_0, q5_1) nb x 8 uint64: bit 4r + j of [i][s] = bit 4s + j of row r's qh, the 5th bit
 *       of the quant that step s of the kernel (elements 4s .. 4s + 3) meets in lane r;
 *   d   nb x 16 halves: d of row r;  m  (q4_1, q5_1) nb x 16 halves: m of row r.
 * The same bytes as the original blocks, rearranged (plus the padding). */
struct quant_pack32_geom {
    int nq;              /* dwords of quants per row and block: 4 or 8 */
    size_t qs, qh, d, m; /* byte offsets of the planes in a group (qh, m: 0 when absent) */
    size_t group;        /* bytes per group of 16 rows */
    int has_qh, has_m;   /* q5_0 / q5_1; q4_1 / q5_1 */
};
void quant_pack32_geom(uint32_t type, int64_t nb, struct quant_pack32_geom *g);
/* Blocks [i0, i0 + ns) of rows 0 .. nr-1 (nr <= 16, w_row_bytes apart) of W, a 32-element
 * format, into planes of ns blocks: qs (ns * nq * 64 bytes), qh (ns * 8, q5 only), d, m
 * (ns * 16 halves; m only for the _1 formats); rows nr .. 15 are zero. */
void quant_pack32_slice(uint32_t type, const void *W, size_t w_row_bytes, int nr, int64_t i0,
                        int64_t ns, uint32_t *qs, uint64_t *qh, uint16_t *d, uint16_t *m);

/* Packs rows [0, rows) of W (q4_K or q6_K, or a 32-element format, k elements per row) into P
 * (quant_packed_size bytes, 64-byte aligned). */
size_t quant_packed_size(uint32_t type, int64_t rows, int64_t k);
void quant_pack(uint32_t type, const void *W, size_t w_row_bytes, int64_t rows, int64_t k, void *P);

/* ---- ISA variants (kern_x86.c, compiled once per ISA) ----
 * Each overwrites, in tab (indexed by type), the entries for which it has kernels; returns how
 * many it filled. Built without the ISA flags (non-x86), they fill nothing. */
int quant_fill_ops_avx2(struct realm_quant_ops tab[REALM_TYPE_COUNT]);
int quant_fill_ops_avx512(struct realm_quant_ops tab[REALM_TYPE_COUNT]);

/* ---- AVX-512 only: 16 q4_K / q6_K weight rows per 512-bit vector (lanes_avx512.c) ----
 * quant_matmul_lanes_*: out[b * os + r] = dot(W row r, act row b), r < n_r, b < n_b, repacking
 * the rows on the fly (k a multiple of QK_K, at least one super-block; wrb * 16 < 2^31);
 * bit-identical to the AVX-512 vec_dot. quant_matmul_packed_*: the matmul_packed entries of the
 * AVX-512 table. Defined only in x86 builds; called only from the AVX-512 table. */
void quant_matmul_lanes_q4_K_avx512(int64_t k, const void *W, size_t wrb, int64_t n_r,
                                    const void *act, size_t arb, int64_t n_b, float *out,
                                    int64_t os);
void quant_matmul_lanes_q6_K_avx512(int64_t k, const void *W, size_t wrb, int64_t n_r,
                                    const void *act, size_t arb, int64_t n_b, float *out,
                                    int64_t os);
realm_quant_matmul_packed_fn quant_matmul_packed_q4_K_avx512;
realm_quant_matmul_packed_fn quant_matmul_packed_q6_K_avx512;

/* ---- AVX-512 only: the 32-element formats, 16 weight rows per 512-bit vector (lanes_avx512.c)
 * quant_matmul_lanes32_avx512: as quant_matmul_lanes_* for q4_0 .. q8_0 (`type`), repacking
 * slices of the rows on the fly (k a multiple of 32, at least one block);
 * quant_matmul_packed_<t>_avx512: the matmul_packed entries over the layout above. Both equal
 * the scalar reference's vec_dot bit for bit (the AVX-512 vec_dot of these formats does too). */
void quant_matmul_lanes32_avx512(uint32_t type, int64_t k, const void *W, size_t wrb, int64_t n_r,
                                 const void *act, size_t arb, int64_t n_b, float *out, int64_t os);
realm_quant_matmul_packed_fn quant_matmul_packed_q4_0_avx512;
realm_quant_matmul_packed_fn quant_matmul_packed_q4_1_avx512;
realm_quant_matmul_packed_fn quant_matmul_packed_q5_0_avx512;
realm_quant_matmul_packed_fn quant_matmul_packed_q5_1_avx512;
realm_quant_matmul_packed_fn quant_matmul_packed_q8_0_avx512;

#endif
