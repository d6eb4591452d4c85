/*
 * ref_q8.c — scalar reference for the 8-bit formats: Q8_0 (weights and the activations of
 * Q4_0 / Q5_0 / Q8_0), Q8_1 (activations of Q4_1 / Q5_1) and Q8_K (activations of the
 * K-quants). The quantizers reproduce llama.cpp's quantize_row_q8_0_ref, _q8_1_ref and
 * _q8_K_ref (ggml/src/ggml-quants.c) operation for operation, so activations are bit-identical
 * to llama.cpp's reference; the dot follows ggml_vec_dot_q8_0_q8_0_generic.
 *
 * Thread rule: pure functions.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "quant/quant.h"

/* ---- Q8_0 ---- */

void quant_dequantize_row_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    assert(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = quant_f16_to_f32(x[i].d);
        for (int j = 0; j < QK8_0; j++)
            y[i * QK8_0 + j] = x[i].qs[j] * d;
    }
}

void quant_quantize_row_q8_0(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    assert(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) {
            const float ax = fabsf(x[i * QK8_0 + j]);
            amax = amax > ax ? amax : ax; /* ggml MAX(), NaN behaviour included */
        }
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++)
            y[i].qs[j] = (int8_t)roundf(x[i * QK8_0 + j] * id);
    }
}

void quant_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx, *y = vy;
    assert(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    float sumf = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sumf += (float)sumi * (quant_f16_to_f32(x[i].d) * quant_f16_to_f32(y[i].d));
    }
    *s = sumf;
}

/* ---- Q8_1 ---- */

void quant_dequantize_row_q8_1(const void *vx, float *y, int64_t n) {
    const block_q8_1 *x = vx;
    assert(n % QK8_1 == 0);
    const int64_t nb = n / QK8_1;
    for (int64_t i = 0; i < nb; i++) {
        const float d = quant_f16_to_f32(x[i].d);
        for (int j = 0; j < QK8_1; j++)
            y[i * QK8_1 + j] = x[i].qs[j] * d;
    }
}

void quant_quantize_row_q8_1(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    assert(n % QK8_1 == 0);
    const int64_t nb = n / QK8_1;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) {
            const float ax = fabsf(x[i * QK8_1 + j]);
            amax = amax > ax ? amax : ax;
        }
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[i * QK8_1 + j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = quant_f32_to_f16((float)sum * d);
    }
}

/* ---- Q8_K ---- */

void quant_dequantize_row_q8_K(const void *vx, float *y, int64_t n) {
    const block_q8_K *x = vx;
    assert(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < QK_K; j++)
            y[i * QK_K + j] = x[i].d * x[i].qs[j];
}

void quant_quantize_row_q8_K(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    assert(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        /* the element of largest magnitude, first one on ties, with its sign */
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            /* llama.cpp leaves bsums unwritten here; they are zero since all quants are */
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* -127/max (not -128): the largest element maps to -127 and no quant is -128 */
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = quant_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}
