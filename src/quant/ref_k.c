/*
 * ref_k.c — scalar reference for the K-quants Q2_K .. Q6_K (super-blocks of 256 weights) and
 * their dot products with Q8_K activations.
 *
 * Each super-block is first unpacked into plain integers — 256 quants, one scale (and min) per
 * group of 16 weights — by one function per format that spells out the bit layout; the
 * dequantizers and dots then share one formula:
 *     w[e] = (d * scale[e/16]) * q[e] - (dmin * min[e/16])
 * evaluated in exactly the float order of llama.cpp's dequantize_row_q*_K (so values are
 * bit-identical to it). The dot sums integers exactly per super-block,
 *     isum = sum_g scale[g] * sum_{e in g} q[e] y[e],   msum = sum_g min[g] * bsums[g],
 * then adds (d_y d) isum - (d_y dmin) msum, as ggml_vec_dot_q*_K_q8_K_generic does.
 *
 * Thread rule: pure functions.
 */
#include <assert.h>

#include "quant/quant.h"

/* An unpacked super-block. */
struct kblock {
    float d, dmin;  /* dmin = 0 for formats without mins */
    int8_t q[QK_K]; /* quants, signed where the format is (q3_K, q6_K) */
    int16_t sc[QK_K / 16];
    int16_t mn[QK_K / 16];
};

/* q2_K: 2-bit quants; element e sits in qs[32*(e/128) + e%32] at bits 2*((e%128)/32);
 * scales[g] = scale (low nibble) | min (high nibble) of group g = e/16. */
static void unpack_q2_K(const block_q2_K *x, struct kblock *k) {
    k->d = quant_f16_to_f32(x->d);
    k->dmin = quant_f16_to_f32(x->dmin);
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, j = (e % 128) / 32, l = e % 32;
        k->q[e] = (int8_t)((x->qs[32 * h + l] >> (2 * j)) & 3);
    }
    for (int g = 0; g < 16; g++) {
        k->sc[g] = x->scales[g] & 0xF;
        k->mn[g] = x->scales[g] >> 4;
    }
}

/* q3_K: low 2 bits as q2_K; the high bit of element e is bit (e/32) of hmask[e%32], and a
 * clear bit subtracts 4 (q in -4..3); 16 6-bit scales (offset 32) packed in 12 bytes. */
static void unpack_q3_K(const block_q3_K *x, struct kblock *k) {
    k->d = quant_f16_to_f32(x->d);
    k->dmin = 0;
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, j = (e % 128) / 32, l = e % 32;
        const int lo = (x->qs[32 * h + l] >> (2 * j)) & 3;
        const int hi = (x->hmask[l] >> (e / 32)) & 1;
        k->q[e] = (int8_t)(lo - (hi ? 0 : 4));
    }
    /* scale g: low 4 bits from scales[g % 8] (nibble g / 8), high 2 bits from
     * scales[8 + g % 4] at bits 2 * (g / 4) */
    for (int g = 0; g < 16; g++) {
        const int low = (x->scales[g % 8] >> (4 * (g / 8))) & 0xF;
        const int high = (x->scales[8 + g % 4] >> (2 * (g / 4))) & 3;
        k->sc[g] = (int16_t)((low | high << 4) - 32);
        k->mn[g] = 0;
    }
}

/* q4_K: group of 64 elements g64 uses qs[32*g64 .. +32]: low nibbles are its first 32
 * elements, high nibbles the next 32; 8 6-bit scales and mins (get_scale_min_k4). */
static void unpack_q4_K(const block_q4_K *x, struct kblock *k) {
    k->d = quant_f16_to_f32(x->d);
    k->dmin = quant_f16_to_f32(x->dmin);
    for (int e = 0; e < QK_K; e++) {
        const uint8_t b = x->qs[32 * (e / 64) + e % 32];
        k->q[e] = (int8_t)((e % 64) < 32 ? (b & 0xF) : (b >> 4));
    }
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, x->scales, &sc, &m);
        k->sc[2 * j] = k->sc[2 * j + 1] = sc;
        k->mn[2 * j] = k->mn[2 * j + 1] = m;
    }
}

/* q5_K: as q4_K, plus bit 4 of element e in bit (e/32) of qh[e%32]. */
static void unpack_q5_K(const block_q5_K *x, struct kblock *k) {
    k->d = quant_f16_to_f32(x->d);
    k->dmin = quant_f16_to_f32(x->dmin);
    for (int e = 0; e < QK_K; e++) {
        const uint8_t b = x->qs[32 * (e / 64) + e % 32];
        const int lo = (e % 64) < 32 ? (b & 0xF) : (b >> 4);
        k->q[e] = (int8_t)(lo | (((x->qh[e % 32] >> (e / 32)) & 1) << 4));
    }
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, x->scales, &sc, &m);
        k->sc[2 * j] = k->sc[2 * j + 1] = sc;
        k->mn[2 * j] = k->mn[2 * j + 1] = m;
    }
}

/* q6_K: per half h (128 elements) and quarter c (32 elements), l = e % 32: low 4 bits are the
 * low (c = 0, 1) or high (c = 2, 3) nibble of ql[64h + 32(c%2) + l], high 2 bits are bits 2c of
 * qh[32h + l]; q - 32 in -32..31; 16 signed 8-bit scales. */
static void unpack_q6_K(const block_q6_K *x, struct kblock *k) {
    k->d = quant_f16_to_f32(x->d);
    k->dmin = 0;
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, c = (e % 128) / 32, l = e % 32;
        const uint8_t b = x->ql[64 * h + 32 * (c % 2) + l];
        const int lo = c < 2 ? (b & 0xF) : (b >> 4);
        const int hi = (x->qh[32 * h + l] >> (2 * c)) & 3;
        k->q[e] = (int8_t)((lo | hi << 4) - 32);
    }
    for (int g = 0; g < 16; g++) {
        k->sc[g] = x->scales[g];
        k->mn[g] = 0;
    }
}

static void dequant_kblock(const struct kblock *k, float *y) {
    for (int g = 0; g < 16; g++) {
        const float dl = k->d * k->sc[g], ml = k->dmin * k->mn[g];
        for (int l = 0; l < 16; l++)
            y[16 * g + l] = dl * k->q[16 * g + l] - ml;
    }
}

/* dequant_kblock without the min term, for the formats that have none (q3_K, q6_K), so that the
 * float expression is exactly llama.cpp's `dl * q`. */
static void dequant_kblock_nomin(const struct kblock *k, float *y) {
    for (int g = 0; g < 16; g++) {
        const float dl = k->d * k->sc[g];
        for (int l = 0; l < 16; l++)
            y[16 * g + l] = dl * k->q[16 * g + l];
    }
}

static float dot_kblock(const struct kblock *k, const block_q8_K *y) {
    int32_t isum = 0, msum = 0;
    for (int g = 0; g < 16; g++) {
        int32_t s = 0;
        for (int l = 0; l < 16; l++)
            s += k->q[16 * g + l] * y->qs[16 * g + l];
        isum += k->sc[g] * s;
        msum += k->mn[g] * y->bsums[g];
    }
    return (y->d * k->d) * (float)isum - (y->d * k->dmin) * (float)msum;
}

/* Generates dequantize_row_<t> and vec_dot_<t>_q8_K from unpack_<t>. */
#define K_QUANT_REF(t, DEQUANT)                                                                    \
    void quant_dequantize_row_##t(const void *vx, float *y, int64_t n) {                           \
        const block_##t *x = vx;                                                                   \
        assert(n % QK_K == 0);                                                                     \
        struct kblock k;                                                                           \
        for (int64_t i = 0; i < n / QK_K; i++) {                                                   \
            unpack_##t(&x[i], &k);                                                                 \
            DEQUANT(&k, y + i * QK_K);                                                             \
        }                                                                                          \
    }                                                                                              \
    void quant_vec_dot_##t##_q8_K(int64_t n, float *s, const void *vx, const void *vy) {           \
        const block_##t *x = vx;                                                                   \
        const block_q8_K *y = vy;                                                                  \
        assert(n % QK_K == 0);                                                                     \
        struct kblock k;                                                                           \
        float sumf = 0;                                                                            \
        for (int64_t i = 0; i < n / QK_K; i++) {                                                   \
            unpack_##t(&x[i], &k);                                                                 \
            sumf += dot_kblock(&k, &y[i]);                                                         \
        }                                                                                          \
        *s = sumf;                                                                                 \
    }

K_QUANT_REF(q2_K, dequant_kblock)
K_QUANT_REF(q3_K, dequant_kblock_nomin)
K_QUANT_REF(q4_K, dequant_kblock)
K_QUANT_REF(q5_K, dequant_kblock)
K_QUANT_REF(q6_K, dequant_kblock_nomin)
