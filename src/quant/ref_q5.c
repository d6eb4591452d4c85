/*
 * ref_q5.c — scalar reference for the 5-bit 32-element formats: Q5_0 (paired with Q8_0) and
 * Q5_1 (paired with Q8_1). Bit 4 of weight j is bit j of the little-endian 32-bit qh.
 * Quantizers reproduce llama.cpp's quantize_row_q5_0_ref / _q5_1_ref; dots follow the ggml
 * _generic kernels (exact integer block sums).
 *
 * Thread rule: pure functions.
 */
#include <assert.h>
#include <float.h>
#include <math.h>

#include "quant/quant.h"

/* The 32 5-bit values of a block (0..31), in element order. */
static void unpack5(const uint8_t qs[16], const uint8_t qh_bytes[4], int q[32]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
        q[j + 16] = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
    }
}

static void pack5(const uint8_t L[32], uint8_t qs[16], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
        qh |= (uint32_t)((L[j] >> 4) & 1) << j;
        qh |= (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh_bytes, &qh, 4);
}

/* ---- Q5_0: w = d * (q - 16) ---- */

void quant_dequantize_row_q5_0(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    assert(n % QK5_0 == 0);
    const int64_t nb = n / QK5_0;
    int q[32];
    for (int64_t i = 0; i < nb; i++, y += QK5_0) {
        const float d = quant_f16_to_f32(x[i].d);
        unpack5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_0; j++)
            y[j] = (q[j] - 16) * d;
    }
}

void quant_quantize_row_q5_0(const float *x, void *vy, int64_t n) {
    block_q5_0 *y = vy;
    assert(n % QK5_0 == 0);
    const int64_t nb = n / QK5_0;
    uint8_t L[32];
    for (int64_t i = 0; i < nb; i++, x += QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK5_0; j++) {
            const int8_t q = (int8_t)(x[j] * id + 16.5f);
            L[j] = (uint8_t)(q < 31 ? q : 31);
        }
        pack5(L, y[i].qs, y[i].qh);
    }
}

void quant_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    assert(n % QK5_0 == 0);
    const int64_t nb = n / QK5_0;
    int q[32];
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        unpack5(x[i].qs, x[i].qh, q);
        int sumi = 0;
        for (int j = 0; j < QK5_0; j++)
            sumi += (q[j] - 16) * y[i].qs[j];
        sumf += (float)sumi * (quant_f16_to_f32(x[i].d) * quant_f16_to_f32(y[i].d));
    }
    *s = sumf;
}

/* ---- Q5_1: w = d * q + m ---- */

void quant_dequantize_row_q5_1(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    assert(n % QK5_1 == 0);
    const int64_t nb = n / QK5_1;
    int q[32];
    for (int64_t i = 0; i < nb; i++, y += QK5_1) {
        const float d = quant_f16_to_f32(x[i].d), m = quant_f16_to_f32(x[i].m);
        unpack5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_1; j++)
            y[j] = q[j] * d + m;
    }
}

void quant_quantize_row_q5_1(const float *x, void *vy, int64_t n) {
    block_q5_1 *y = vy;
    assert(n % QK5_1 == 0);
    const int64_t nb = n / QK5_1;
    uint8_t L[32];
    for (int64_t i = 0; i < nb; i++, x += QK5_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK5_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        y[i].m = quant_f32_to_f16(min);
        for (int j = 0; j < QK5_1; j++)
            L[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        pack5(L, y[i].qs, y[i].qh);
    }
}

void quant_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    assert(n % QK5_1 == 0);
    const int64_t nb = n / QK5_1;
    int q[32];
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        unpack5(x[i].qs, x[i].qh, q);
        int sumi = 0;
        for (int j = 0; j < QK5_1; j++)
            sumi += q[j] * y[i].qs[j];
        sumf += (float)sumi * (quant_f16_to_f32(x[i].d) * quant_f16_to_f32(y[i].d)) +
                quant_f16_to_f32(x[i].m) * quant_f16_to_f32(y[i].s);
    }
    *s = sumf;
}
