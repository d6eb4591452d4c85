/*
 * ref_q4.c — scalar reference for the 4-bit 32-element formats: Q4_0 (paired with Q8_0
 * activations) and Q4_1 (paired with Q8_1, whose stored sum d*sum(q) gives the min term).
 * Quantizers reproduce llama.cpp's quantize_row_q4_0_ref / _q4_1_ref; dots follow
 * ggml_vec_dot_q4_0_q8_0_generic / _q4_1_q8_1_generic: an exact integer sum per block, then one
 * float multiply-add per block.
 *
 * Thread rule: pure functions.
 */
#include <assert.h>
#include <float.h>
#include <math.h>

#include "quant/quant.h"

/* ---- Q4_0: w = d * (q - 8) ---- */

void quant_dequantize_row_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    assert(n % QK4_0 == 0);
    const int64_t nb = n / QK4_0;
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        const float d = quant_f16_to_f32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void quant_quantize_row_q4_0(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    assert(n % QK4_0 == 0);
    const int64_t nb = n / QK4_0;
    for (int64_t i = 0; i < nb; i++, x += QK4_0) {
        float amax = 0.0f, max = 0.0f; /* value of largest magnitude, with sign */
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int8_t q0 = (int8_t)(x[j] * id + 8.5f),
                         q1 = (int8_t)(x[j + QK4_0 / 2] * id + 8.5f);
            y[i].qs[j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
        }
    }
}

void quant_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    assert(n % QK4_0 == 0);
    const int64_t nb = n / QK4_0;
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
        }
        sumf += (float)sumi * (quant_f16_to_f32(x[i].d) * quant_f16_to_f32(y[i].d));
    }
    *s = sumf;
}

/* ---- Q4_1: w = d * q + m ---- */

void quant_dequantize_row_q4_1(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    assert(n % QK4_1 == 0);
    const int64_t nb = n / QK4_1;
    for (int64_t i = 0; i < nb; i++, y += QK4_1) {
        const float d = quant_f16_to_f32(x[i].d), m = quant_f16_to_f32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

void quant_quantize_row_q4_1(const float *x, void *vy, int64_t n) {
    block_q4_1 *y = vy;
    assert(n % QK4_1 == 0);
    const int64_t nb = n / QK4_1;
    for (int64_t i = 0; i < nb; i++, x += QK4_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        y[i].m = quant_f32_to_f16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int8_t q0 = (int8_t)((x[j] - min) * id + 0.5f);
            const int8_t q1 = (int8_t)((x[j + QK4_1 / 2] - min) * id + 0.5f);
            y[i].qs[j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
        }
    }
}

void quant_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    assert(n % QK4_1 == 0);
    const int64_t nb = n / QK4_1;
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
        }
        /* sum_j (d_x q_j + m_x) d_y y_j = d_x d_y sum q_j y_j + m_x * s_y */
        sumf += (float)sumi * (quant_f16_to_f32(x[i].d) * quant_f16_to_f32(y[i].d)) +
                quant_f16_to_f32(x[i].m) * quant_f16_to_f32(y[i].s);
    }
    *s = sumf;
}
