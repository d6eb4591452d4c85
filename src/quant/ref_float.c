/*
 * ref_float.c — scalar reference kernels for the float formats F32, F16 and BF16 (weights), and
 * the public fp16 / bf16 conversions. Dot products pair these weights with F32 activations and
 * accumulate in double (as ggml's scalar ggml_vec_dot_f32 does), so they are the accurate
 * reference the SIMD variants are compared with.
 *
 * Thread rule: pure functions.
 */
#include <assert.h>
#include <string.h>

#include "quant/quant.h"

float realm_f16_to_f32(uint16_t h) {
    return quant_f16_to_f32(h);
}
uint16_t realm_f32_to_f16(float f) {
    return quant_f32_to_f16(f);
}
float realm_bf16_to_f32(uint16_t h) {
    return quant_bf16_to_f32(h);
}

/* ---- F32 ---- */

void quant_dequantize_row_f32(const void *x, float *y, int64_t n) {
    assert(n >= 0);
    memcpy(y, x, (size_t)n * sizeof(float));
}

void quant_quantize_row_f32(const float *x, void *y, int64_t n) {
    assert(n >= 0);
    memcpy(y, x, (size_t)n * sizeof(float));
}

void quant_vec_dot_f32_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

/* ---- F16 ---- */

void quant_dequantize_row_f16(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++)
        y[i] = quant_f16_to_f32(x[i]);
}

void quant_quantize_row_f16(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++)
        y[i] = quant_f32_to_f16(x[i]);
}

void quant_vec_dot_f16_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx;
    const float *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(quant_f16_to_f32(x[i]) * y[i]);
    *s = (float)sum;
}

/* ---- BF16 ---- */

void quant_dequantize_row_bf16(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++)
        y[i] = quant_bf16_to_f32(x[i]);
}

void quant_quantize_row_bf16(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++)
        y[i] = quant_f32_to_bf16(x[i]);
}

void quant_vec_dot_bf16_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx;
    const float *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(quant_bf16_to_f32(x[i]) * y[i]);
    *s = (float)sum;
}
